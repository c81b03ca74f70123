"""withcache-admin rm, pin, verify, export/import-catalog; scrub and the read path's size check."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support import (
    MIB,
    artifacts_by_key,
    assert_clean_log,
    db,
    eventually,
    start_host,
    tool,
    write_file,
)
from withcache.scrub import SCRUB_BYTES_PER_SECOND


def admin(*args):
    return subprocess.run(
        [tool("withcache-admin"), *args], capture_output=True, text=True, timeout=120
    )


def seed(data: Path, tmp: Path, url: str, size: int, seed: int) -> str:
    out = admin("import", "-d", str(data), url, str(write_file(tmp / f"src{seed}", size, seed)))
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[0]


def blob(data: Path, digest: str) -> Path:
    return data / "blobs" / digest[:2] / digest[2:]


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(data)


def test_rm_pin_and_unpin_by_origin_url(tmp_path):
    data = tmp_path / "data"
    digest = seed(data, tmp_path, "https://e.example.com/a.run", 1000, 1)
    assert (
        admin("pin", "-d", str(data), "HTTPS://E.example.com/a.run?X-Amz-Signature=1").returncode
        == 0
    )
    assert artifacts_by_key(data)["https://e.example.com/a.run"]["pinned"] is True
    assert admin("unpin", "-d", str(data), "https://e.example.com/a.run").returncode == 0
    assert artifacts_by_key(data)["https://e.example.com/a.run"]["pinned"] is False
    out = admin("rm", "-d", str(data), "https://e.example.com/a.run")
    assert out.returncode == 0 and "removed" in out.stdout
    assert artifacts_by_key(data) == {} and not blob(data, digest).exists()
    missing = admin("rm", "-d", str(data), "https://e.example.com/a.run")
    assert missing.returncode == 1 and "not cached" in missing.stdout


def test_verify_quarantines_a_flipped_byte_and_a_truncated_blob(tmp_path):
    data = tmp_path / "data"
    good = seed(data, tmp_path, "https://e.example.com/good", 5000, 1)
    flipped = seed(data, tmp_path, "https://e.example.com/flipped", 5000, 2)
    short = seed(data, tmp_path, "https://e.example.com/short", 5000, 3)
    flip_byte(blob(data, flipped))
    with open(blob(data, short), "r+b") as f:
        f.truncate(4000)
    out = admin("verify", "-d", str(data))
    assert out.returncode == 1
    assert "1 blobs ok, 2 bad" in out.stdout
    assert set(artifacts_by_key(data)) == {"https://e.example.com/good"}
    quarantined = {p.name.split("-")[0] for p in (data / "quarantine").iterdir()}
    assert quarantined == {flipped, short}
    assert blob(data, good).exists()
    assert admin("verify", "-d", str(data)).returncode == 0


def test_export_and_import_catalog_move_a_cache_between_hosts(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    digest = seed(old, tmp_path, "https://e.example.com/a", 3000, 1)
    assert admin("pin", "-d", str(old), "https://e.example.com/a").returncode == 0
    export = tmp_path / "catalog.jsonl"
    assert admin("export", "-d", str(old), str(export)).returncode == 0
    out = admin("import-catalog", "-d", str(new), str(export), "--blobs-from", str(old))
    assert out.returncode == 0, out.stdout + out.stderr
    row = artifacts_by_key(new)["https://e.example.com/a"]
    assert (row["sha256"], row["pinned"]) == (digest, True)
    assert blob(new, digest).read_bytes() == blob(old, digest).read_bytes()
    without_blobs = admin("import-catalog", "-d", str(tmp_path / "empty"), str(export))
    assert without_blobs.returncode == 1 and "skipped (no blob)" in without_blobs.stdout


def test_finding6_import_catalog_rekeys_an_old_export_and_skips_credential_urls(tmp_path):
    """An export written by an older withcache (keys without the query) is keyed here as this
    catalog keys, so its artifacts are reachable; a URL with a token is not imported."""
    old, new = tmp_path / "old", tmp_path / "new"
    digest = seed(old, tmp_path, "https://e.example.com/tool.sh?version=2", 3000, 1)
    export = tmp_path / "catalog.jsonl"
    assert admin("export", "-d", str(old), str(export)).returncode == 0
    (row,) = [json.loads(line) for line in export.read_text().splitlines()]
    leaked = dict(row, key="https://e.example.com/x", url="https://e.example.com/x?token=SECRET")
    row["key"] = "https://e.example.com/tool.sh"  # as withcache keyed it before
    export.write_text(json.dumps(row) + "\n" + json.dumps(leaked) + "\n")
    out = admin("import-catalog", "-d", str(new), str(export), "--blobs-from", str(old))
    assert out.returncode == 1 and "SECRET" not in out.stdout
    assert "imported 1 artifacts, skipped 1" in out.stdout
    assert list(artifacts_by_key(new)) == ["https://e.example.com/tool.sh?version=2"]
    assert artifacts_by_key(new)["https://e.example.com/tool.sh?version=2"]["sha256"] == digest


def test_a_running_host_never_serves_a_truncated_blob_and_scrub_catches_a_flip(tmp_path):
    data = tmp_path / "data"
    flipped = seed(data, tmp_path, "https://e.example.com/flipped", 200_000, 1)
    short = seed(data, tmp_path, "https://e.example.com/short", 200_000, 2)
    host = start_host(data, "--curate", "--scrub-interval", "3600")
    try:
        # The size check on the read path: a truncated blob is a miss at once.
        with open(blob(data, short), "r+b") as f:
            f.truncate(1000)
        status, _ = host.get("/blob?url=https://e.example.com/short")
        assert status == 404
        host.wait_for_log(f"quarantined blob {short}")
    finally:
        host.stop()
    flip_byte(blob(data, flipped))
    host = start_host(data, "--curate", "--scrub-interval", "0.1")
    try:
        host.wait_for_log(f"quarantined blob {flipped}")
        status, _ = host.get("/blob?url=https://e.example.com/flipped")
        assert status == 404
        assert artifacts_by_key(data) == {}
        assert len(list((data / "quarantine").iterdir())) == 2
    finally:
        host.stop()


def test_scrub_marks_good_blobs_verified(tmp_path):
    data = tmp_path / "data"
    seed(data, tmp_path, "https://e.example.com/a", 10_000, 1)
    host = start_host(data, "--curate", "--scrub-interval", "0.05")
    try:
        eventually(
            lambda: db(data, "SELECT verified_at FROM artifacts")[0][0],
            lambda verified: verified is not None,
            30,
            what="the scrub verifies the blob",
            every=0.05,
        )
        status, _ = host.get("/blob?url=https://e.example.com/a")
        assert status == 200
    finally:
        host.stop()


def scrub_position(pid: int, path: Path) -> int | None:
    """How far the process has read into path through an open file of it, if it has one open."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != str(path):
                continue
            fdinfo = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except FileNotFoundError:  # closed meanwhile
            continue
        return int(fdinfo.split("pos:")[1].split()[0])
    return None


def test_sigterm_during_the_scrub_of_a_big_blob_exits_at_once_and_writes_the_hit_counts(
    tmp_path,
):
    """Stopping does not wait for the scrub to read a blob at its paced rate (which could
    outlast systemd's stop timeout, whose SIGKILL would skip the last hit-count write)."""
    data = tmp_path / "data"
    size = 256 * MIB  # 8 s of reading at the scrub's rate
    sparse = tmp_path / "big.bin"
    with open(sparse, "wb") as f:
        f.truncate(size)
    big = admin("import", "-d", str(data), "https://e.example.com/big.iso", str(sparse))
    assert big.returncode == 0, big.stderr
    big_sha = big.stdout.split()[0]
    seed(data, tmp_path, "https://e.example.com/small", 10_000, 1)  # scrubbed after big.iso
    host = start_host(data, "--curate", "--scrub-interval", "0.05")
    try:
        eventually(
            lambda: scrub_position(host.pid, blob(data, big_sha)),
            lambda pos: pos is not None and pos > 0,
            what="the scrub reading big.iso",
            every=0.01,
        )
        for _ in range(3):
            assert host.get("/blob?url=https://e.example.com/small")[0] == 200
        read = scrub_position(host.pid, blob(data, big_sha))
        assert read is not None
        asked = time.monotonic()
        host.proc.send_signal(signal.SIGTERM)
        # twistd shuts down, then exits by the signal it was sent.
        assert host.proc.wait(timeout=60) == -signal.SIGTERM
        took = time.monotonic() - asked
    finally:
        host.stop(signal.SIGKILL)
    # Gone well before the paced read of the rest could have finished, the blob judged neither
    # way, and the hits counted in the last second written.
    assert took < (size - read) / SCRUB_BYTES_PER_SECOND / 4
    rows = db(data, "SELECT key, hits, verified_at FROM artifacts ORDER BY key")
    assert rows == [
        ("https://e.example.com/big.iso", 0, None),
        ("https://e.example.com/small", 3, None),
    ]
    log = host.log()
    stopped = log.index(f"scrub of blob {big_sha} ({size} bytes) stopped after")
    assert stopped < log.index("Main loop terminated") < log.index("Server Shut Down")
    assert not (data / "quarantine").exists()
    assert_clean_log(host)
