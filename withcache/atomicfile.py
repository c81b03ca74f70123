"""Small files in the data dir replaced whole: readers see the old or the new text, never a
half-written one, and processes that share the data dir may write the same file at once."""

from __future__ import annotations

import contextlib
import os
import tempfile


def replace_text(path: str, text: str) -> None:
    """Make path hold text. Blocking. A temporary file of its own per call (hosts sharing a
    data dir start together and each leaves its settings), and no write when path already
    holds text."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except (OSError, ValueError):
        pass
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
