"""Faults: origin resets, stalls, 5xx storms, Content-Length lies and a full disk.

Each fault ends in a defined job state with a reason an operator can read (the job's error
text for a failed fill, the host's log line for an attempt it recovered from), nothing partial
is ever listed, tmp/ is left empty, and the host goes on serving hits and /healthz throughout.
"""

from __future__ import annotations

import errno
import re
import subprocess
from dataclasses import dataclass

import pytest

from tests.reliability.common import check_data_dir, jobs_by_url, serves, wait_until
from tests.support import MIB, assert_clean_log, start_host, token, write_file

FINAL = ("completed", "failed", "cancelled")
IDLE = 2  # --idle-timeout: how long a silent origin is waited for
HIT_URL = "https://vendor.example/faults/known-good.bin"
HIT = (MIB, 41)  # (size, seed) of the artifact that must keep serving


@dataclass(frozen=True)
class Fault:
    name: str
    query: str  # tests/origin.py's misbehaviour
    state: str  # the job's final state
    reason: str  # a regex: the job's error (failed) or the logged retry (completed)
    size: int = 2 * MIB


FAULTS = [
    Fault("reset mid-body", "drop=0.4", "completed", r"attempt 1 failed \(connection lost"),
    Fault("stall mid-body", "stall=0.5", "completed", rf"no data from the origin for {IDLE} s"),
    Fault(
        "stall before headers",
        "delay=600",
        "failed",
        r"gave up after 5 attempts without progress: "
        r"timed out waiting for the origin's response headers",
    ),
    Fault("5xx storm that passes", "fail=503&times=3", "completed", r"origin answered 503"),
    Fault(
        "5xx storm that lasts",
        "fail=502&times=1000",
        "failed",
        r"gave up after 5 attempts without progress: origin answered 502 Bad Gateway",
    ),
    Fault(
        "Content-Length lie",
        "lie=1000",
        "failed",
        r"gave up after 5 attempts without progress: "
        r".*(connection lost|closed after \d+ of \d+ bytes|restart)",
    ),
    Fault("not found", "fail=404&times=1000", "failed", r"^origin answered 404 Not Found$"),
]


def seed_hit(host, tmp) -> None:
    host.seed(HIT_URL, write_file(tmp / "known-good.bin", *HIT))


def healthy(host) -> bool:
    return host.get("/healthz")[0] == 200 and serves(host, HIT_URL, *HIT)


@pytest.fixture
def fault_host(tmp_path):
    # A miss answers 404 at once (no wait for a stream): these tests are about fills.
    host = start_host(
        tmp_path / "data",
        "--allow-private",
        "--workers",
        "8",
        "--idle-timeout",
        str(IDLE),
        "--stream-wait",
        "0",
    )
    seed_hit(host, tmp_path)
    yield host
    host.stop()
    assert_clean_log(host)


def test_each_origin_fault_ends_in_a_defined_state_with_a_readable_reason(
    fault_host, origin, figures
):
    host = fault_host
    urls = {
        fault: f"{origin.base}/f/{fault.size}/{i}/fault-{i}.bin?{fault.query}"
        for i, fault in enumerate(FAULTS)
    }
    for url in urls.values():
        assert host.get(f"/b/{token(url)}/x")[0] == 404
    assert healthy(host)  # while every fault is in progress

    def finished():
        jobs = jobs_by_url(host.data_dir)
        done = {u: jobs.get(u, ("?",))[0] for u in urls.values()}
        return all(state in FINAL for state in done.values()) and jobs

    jobs = wait_until(finished, 120, "every faulty fill reaches a final state", every=0.5)
    log = host.log()
    listed = {row["url"] for row in check_data_dir(host.data_dir)}
    outcomes = {}
    for fault, url in urls.items():
        state, error = jobs[url]
        outcomes[fault.name] = {"state": state, "reason": error or _retry_logged(log, url)}
        assert state == fault.state, (fault, error)
        if state == "failed":
            assert re.search(fault.reason, error), (fault, error)
            assert url not in listed
        else:
            assert re.search(fault.reason, outcomes[fault.name]["reason"]), (fault, log[-3000:])
            assert serves(host, url, fault.size, FAULTS.index(fault))
    assert list((host.data_dir / "tmp").iterdir()) == []
    assert healthy(host)
    figures["faults"] = outcomes


def _retry_logged(log: str, url: str) -> str:
    """The host's log line about a retried attempt of url (its path: queries are redacted)."""
    path = url.split("?")[0].split("/", 3)[3]
    lines = [line for line in log.splitlines() if path in line and "attempt" in line]
    return lines[0].split("]", 1)[-1].strip() if lines else ""


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs to be a host's data dir (the host's log is written beside it)."""
    mount = tmp_path / "data"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill_up(directory) -> None:
    """Write a ballast file until the filesystem has no room left."""
    with open(directory / "ballast", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC


def test_a_full_disk_fails_the_fill_with_a_readable_reason_and_keeps_nothing_partial(
    small_disk, tmp_path, origin, figures
):
    host = start_host(small_disk, "--allow-private", "--stream-wait", "0")
    try:
        seed_hit(host, tmp_path)
        url = f"{origin.base}/f/{16 * MIB}/42/too-big.iso"
        assert host.get(f"/b/{token(url)}/too-big.iso")[0] == 404
        state, error = wait_until(
            lambda: (
                jobs_by_url(small_disk).get(url, ("?",))[0] in FINAL
                and jobs_by_url(small_disk)[url]
            ),
            60,
            "the fill that cannot fit ends",
        )
        assert (state, error) == ("failed", "[Errno 28] No space left on device")
        assert url not in {row["url"] for row in check_data_dir(small_disk)}
        assert list((small_disk / "tmp").iterdir()) == []
        assert healthy(host)
    finally:
        host.stop()
    # (The host may log that it could not queue the miss's fill: the disk was full.)
    assert_clean_log(host)
    figures["disk_full"] = {"state": state, "reason": error}


def test_hits_and_misses_are_still_answered_while_the_disk_is_full(small_disk, tmp_path):
    host = start_host(small_disk)
    try:
        seed_hit(host, tmp_path)
        fill_up(small_disk)  # nothing can be written now, the catalog's WAL included
        try:
            answers = {
                "hit": serves(host, HIT_URL, *HIT),
                "miss": host.get(f"/b/{token(HIT_URL + '.new')}/x")[0],
                "healthz": host.get("/healthz")[0],
            }
        finally:
            (small_disk / "ballast").unlink()
        assert answers == {"hit": True, "miss": 404, "healthz": 200}
        assert healthy(host)
    finally:
        host.stop()
    # (The host may log that it could not queue the miss's fill: the disk was full.)
