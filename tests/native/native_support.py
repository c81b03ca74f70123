"""Helpers for the native shim's tests: build it with the ziglang from PyPI, fake real tools,
and run it next to plan().

Not a conftest.py on purpose: tests/shim has a top-level `conftest` module that its tests
import by that name, and a second one here would shadow it. The fixtures are imported by the
test modules instead.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shim_e2e_support import make_tool  # noqa: F401 (re-exported to the tests)

ROOT = Path(__file__).resolve().parents[2]
SHIM_NATIVE = ROOT / "shim-native"
for extra in (ROOT / "shimsrc", ROOT / "tests" / "shim"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from withcache_shim.probe import probe_command  # noqa: E402

BINARY = SHIM_NATIVE / "zig-out" / "bin" / "withcache-shim"
TARGETS = {"x86_64-linux-musl": 0x3E, "aarch64-linux-musl": 0xB7}  # ELF e_machine
MAX_SIZE = 200 * 1024
SERVER_VARS = ("WITHCACHE_SERVER", "CURLWITHCACHE_SERVER", "WGETWITHCACHE_SERVER")
MISS_CODE = {"curl": 22, "wget": 8}
UNREACHABLE_CODE = {"curl": 7, "wget": 4}


def zig_build(target: str, prefix: Path | None = None) -> Path:
    """`python -m ziglang build -Doptimize=ReleaseSmall -Dtarget=<target>` in shim-native/."""
    command = [sys.executable, "-m", "ziglang", "build", "-Doptimize=ReleaseSmall"]
    command.append(f"-Dtarget={target}")
    if prefix is not None:
        command += ["--prefix", str(prefix)]
    done = subprocess.run(command, cwd=SHIM_NATIVE, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"zig build failed:\n{done.stdout}\n{done.stderr}"
    return (prefix / "bin" / "withcache-shim") if prefix is not None else BINARY


@functools.cache
def build_native() -> Path:
    """The x86_64 binary at the contract's place, built once per test session."""
    return zig_build("x86_64-linux-musl")


@pytest.fixture(scope="session")
def native_bin() -> Path:
    return build_native()


def make_fake_tool(directory: Path, tool: str) -> Path:
    probe = probe_command("REAL", tool, "URL")[1:-1]
    n = len(probe) + 1
    tests = " && ".join(f'[ "${i + 1}" = "{word}" ]' for i, word in enumerate(probe))
    body = (
        "#!/bin/sh\n"
        f'if [ "$#" = {n} ] && {tests}; then\n'
        f'  printf "%s\\n" "${n}" >> "$FAKE_LOG"\n'
        "  exit $FAKE_PROBE_CODE\n"
        "fi\n"
        'printf \'%s\\0\' "$0" "$@"\n'
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / tool
    path.write_text(body)
    path.chmod(0o755)
    return path


def link_shim(directory: Path, name: str, binary: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if not path.is_symlink():
        path.symlink_to(binary)
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any cache server or proxy, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SERVER_VARS and not k.lower().endswith("_proxy") and k != "POSIXLY_CORRECT"
    }
    env.update(extra)
    return env


def run_native(
    shim: Path, args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(shim), *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )
