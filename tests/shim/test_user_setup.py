"""docs/shims.md's "Your user" set-up, run by a throwaway user account (issue 21).

Way (3) claims every shell of yours gets the shims; the lines must therefore reach login shells
and what they start, interactive or not (`su - you -c`, `bash -lc`), not only interactive ones
(Debian's ~/.bashrc returns at once when not interactive).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support import can_make_users, throwaway_user

REPO = Path(__file__).resolve().parents[2]
SHIMS_MD = REPO / "docs" / "shims.md"
SERVER = "http://cache.lab:3000"

pytestmark = pytest.mark.skipif(
    not can_make_users(), reason="needs root, useradd and /etc/skel to make a throwaway user"
)


def first_sh_block(text: str, heading: str) -> str:
    section = text.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]
    return re.search(r"^```sh\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL).group(1)


@pytest.fixture
def user():
    with throwaway_user("wc21") as name:
        yield name


def as_user(user: str, command: str, *, login: bool = True) -> str:
    argv = ["su", "-", user, "-c", command] if login else ["su", user, "-c", command]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, (command, out.stdout, out.stderr)
    return out.stdout.strip()


def test_way_3_reaches_login_shells_and_what_they_start(user):
    text = SHIMS_MD.read_text()
    links, profile = (
        first_sh_block(text, "2. This shell only"),
        first_sh_block(text, "3. Your user"),
    )
    # Stand-ins for the installed shims, where the user can see them (`command -v` needs that).
    bin_dir = Path(tempfile.mkdtemp(prefix="wc21-shims-"))
    try:
        bin_dir.chmod(0o755)
        for name in ("curlwithcache", "wgetwithcache"):
            (bin_dir / name).write_text("#!/bin/sh\necho shim\n")
            (bin_dir / name).chmod(0o755)
        script = f'export PATH="{bin_dir}:$PATH"\n{links}\n{profile}'
        as_user(user, f"bash -e -c {shlex.quote(script)}")
        home = as_user(user, "printf %s ~")
        shim = f"{home}/.withcache/bin/curl"
        checks = {
            "command -v curl": shim,  # su - : a login shell, not interactive
            "bash -lc 'command -v curl'": shim,
            "bash -c 'command -v wget'": f"{home}/.withcache/bin/wget",  # started from a login
            "sh -c 'printenv WITHCACHE_SERVER'": SERVER,
            "bash -ic 'command -v curl' 2>/dev/null": shim,
            # A nested login does not put the directory on PATH twice.
            "bash -lc 'echo $PATH' | tr : '\\n' | grep -c withcache": "1",
        }
        for command, expected in checks.items():
            assert as_user(user, command) == expected, command
    finally:
        shutil.rmtree(bin_dir)
