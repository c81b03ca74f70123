"""Nothing in the data dir is readable by other local users (issue 13, finding 11)."""

from __future__ import annotations

import os
import stat

from tests.support import start_host, write_file


def world_accessible(root) -> list[str]:
    """What under root (not root itself: the operator may have made it) other users can use."""
    found = []
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(directory, name)
            if stat.S_IMODE(os.lstat(path).st_mode) & 0o007:
                found.append(f"{oct(stat.S_IMODE(os.lstat(path).st_mode))} {path}")
    return found


def test_the_data_dir_is_created_owner_and_group_only_under_a_default_umask(tmp_path):
    previous = os.umask(0o022)  # the usual default: everything world-readable
    try:
        host = start_host(tmp_path / "fresh", "--curate")
        try:
            host.seed("https://vendor.example/a.run", write_file(tmp_path / "a.run", 100_000))
            assert host.get("/blob?url=https://vendor.example/a.run")[0] == 200
        finally:
            host.stop()
    finally:
        os.umask(previous)
    assert world_accessible(tmp_path / "fresh") == []
