"""Fixtures for the shim's tests: the shim importable without an install, fake real tools, and
a way to run the shim as a program exactly as a user's shell would."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shim_e2e_support import make_tool

ROOT = Path(__file__).resolve().parents[2]
SHIMSRC = ROOT / "shimsrc"
if str(SHIMSRC) not in sys.path:
    # The package is importable without `pip install -e .`; pyproject maps it the same way.
    sys.path.insert(0, str(SHIMSRC))

REAL_CURL = "/usr/bin/curl"
REAL_WGET = "/usr/bin/wget"
SERVER_VARS = ("WITHCACHE_SERVER", "CURLWITHCACHE_SERVER", "WGETWITHCACHE_SERVER")


def decode_token(cache_url: str) -> str:
    """The origin URL inside a cache URL `<server>/b/<token>/<name>`."""
    token = cache_url.split("/b/", 1)[1].split("/", 1)[0]
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


@pytest.fixture(autouse=True)
def private_breaker_state(tmp_path, monkeypatch) -> Path:
    """Each test's shims (and their children) keep their breaker state in the test's own
    directory, never in the user's."""
    run = tmp_path / "xdg-run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.delenv("WITHCACHE_BREAKER", raising=False)
    return run


class FakeProbe:
    """A probe that answers from the origin URL: '/miss-' in it is a miss, '/down-' is
    unreachable, anything else a hit; it records every origin it was asked about."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.vias: list = []

    def __call__(self, real: str, tool: str, cache_url: str, via=None) -> str:
        self.vias.append(via)
        origin = decode_token(cache_url)
        self.asked.append(origin)
        if "/down-" in origin:
            return "unreachable"
        if "/cd-" in origin:
            return "hit+content-disposition"
        return "miss" if "/miss-" in origin else "hit"


@pytest.fixture(scope="module")
def fake_bin(tmp_path_factory) -> Path:
    """A directory holding do-nothing `curl` and `wget`, to put on PATH for plan()."""
    directory = tmp_path_factory.mktemp("fakebin")
    make_tool(directory, "curl")
    make_tool(directory, "wget")
    return directory


@pytest.fixture
def probe() -> FakeProbe:
    return FakeProbe()


def shim_command(tool: str) -> list[str]:
    """How to start the shim: the installed console script if there is one, else `-m`."""
    script = Path(sys.executable).parent / f"{tool}withcache"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "withcache_shim", tool]


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any cache server or proxy, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SERVER_VARS and not k.lower().endswith("_proxy")
    }
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SHIMSRC), os.environ.get("PYTHONPATH", "")) if p
    )
    env.update(extra)
    return env


def run_shim(
    tool: str, args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*shim_command(tool), *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )
