"""The README's command blocks, run as a newcomer runs them (issue 21).

A newcomer has a clone, `./dev serve` running, and types the README's blocks into `./dev shell`.
These tests extract those ```sh blocks from README.md, point the origin URL at a closed port on
127.0.0.1 and `cachehost:3000` at a real host started here, and run them with bash under
`./dev shell` in a clean environment (env -i with a minimal PATH).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import admin_json, assert_clean_log, eventually, payload, start_host

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VENDOR = "https://developer.download.nvidia.com/.../"
NAME = "cuda_12.4.0_550.54.14_linux.run"

pytestmark = pytest.mark.e2e


def sh_blocks(text: str, section: str) -> list[str]:
    """The ```sh blocks under one `## ` heading of a Markdown text."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    bodies = dict(zip(parts[1::2], parts[2::2], strict=True))
    return re.findall(r"^```sh\n(.*?)^```$", bodies[section], flags=re.MULTILINE | re.DOTALL)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def newcomer(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """bash -e on script inside `./dev shell`, from a clean environment."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(cwd),
        "LANG": "C.UTF-8",
        # The suite's own virtualenv, which `./dev test` made (the default is the clone's .venv).
        "WITHCACHE_VENV": sys.prefix,
    }
    (cwd / "readme.sh").write_text(script)
    return subprocess.run(
        ["env", "-i", *(f"{k}={v}" for k, v in env.items()), str(REPO / "dev"), "shell"]
        + ["bash", "-euo", "pipefail", "readme.sh"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_readme_commands_import_list_pin_and_fetch_as_written(tmp_path):
    blocks = sh_blocks(README.read_text(), "Putting artifacts in and getting them out")
    blocks += sh_blocks(README.read_text(), "The shims")
    assert len(blocks) == 2, blocks
    data = payload(300_000, seed=21)
    (tmp_path / "cuda.run").write_bytes(data)
    # The origin is closed: whatever arrives came from the cache.
    origin = f"http://127.0.0.1:{closed_port()}/dl/"
    url = origin + NAME
    host = start_host(tmp_path / "data")
    try:
        script = "\n".join(blocks)
        assert VENDOR + NAME in script and "cachehost:3000" in script, script
        script = script.replace(VENDOR, origin).replace("cachehost:3000", host.url[7:])
        out = newcomer(script, tmp_path)
        assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
        assert url in out.stdout, out.stdout  # withcache-admin ls
        [row] = admin_json(tmp_path / "data", "ls")
        assert row["url"] == url and row["pinned"], row
        # curl -O by token, curl -G by url=, and the shim: three GET hits, the same bytes.
        hits = eventually(lambda: admin_json(tmp_path / "data", "ls")[0]["hits"], lambda n: n >= 3)
        assert hits == 3
        assert (tmp_path / "cuda.run").read_bytes() == data
        assert_clean_log(host)
    finally:
        host.stop()


def test_without_dev_shell_the_commands_are_not_on_a_clean_path(tmp_path):
    """What the README says: .venv/bin is not on PATH until `./dev shell`."""
    plain = subprocess.run(
        ["env", "-i", "PATH=/usr/bin:/bin", "bash", "-c", "command -v withcache-admin"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert plain.returncode != 0, plain.stdout
    inside = newcomer("command -v withcache-admin curlwithcache wgetwithcache\n", tmp_path)
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.splitlines() == [
        f"{sys.prefix}/bin/{c}" for c in ("withcache-admin", "curlwithcache", "wgetwithcache")
    ]
