"""The native shim's build contract: both targets, static, stripped, small; tables in sync."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from native_support import BINARY, MAX_SIZE, ROOT, SHIM_NATIVE, TARGETS, build_native, zig_build

PT_INTERP, PT_DYNAMIC = 3, 2
SHT_SYMTAB = 2


def elf_facts(path: Path) -> dict:
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1  # 64-bit, little-endian
    (machine,) = struct.unpack_from("<H", data, 18)
    phoff, shoff = struct.unpack_from("<QQ", data, 32)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 54)
    ptypes = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    stypes = [struct.unpack_from("<I", data, shoff + i * shentsize + 4)[0] for i in range(shnum)]
    return {"machine": machine, "ptypes": ptypes, "stypes": stypes, "size": len(data)}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_target_is_static_stripped_and_small(target, tmp_path) -> None:
    if target == "x86_64-linux-musl":
        binary = build_native()
        assert binary == BINARY  # the contract: shim-native/zig-out/bin/withcache-shim
    else:
        binary = zig_build(target, prefix=tmp_path / "out")
    facts = elf_facts(binary)
    assert facts["machine"] == TARGETS[target]
    assert PT_INTERP not in facts["ptypes"] and PT_DYNAMIC not in facts["ptypes"]
    assert SHT_SYMTAB not in facts["stypes"]  # stripped
    assert facts["size"] <= MAX_SIZE, f"{target}: {facts['size']} bytes"


def test_the_tables_are_generated_from_the_python_shim() -> None:
    done = subprocess.run(
        [sys.executable, str(SHIM_NATIVE / "gen_tables.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_the_zig_sources_are_zig_fmt_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ziglang", "fmt", "--check", str(SHIM_NATIVE)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
