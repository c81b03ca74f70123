"""An origin faster than the disk, and clients that hang up on their misses.

A fill from an https:// origin on 127.0.0.1 (the host trusting a test CA through SSL_CERT_FILE)
into a host whose disk is slowed down: the fill pauses and resumes its connection many times and
completes in one attempt with the right bytes. A storm of HEAD misses whose clients close at
once: every miss is counted and causes its fill, as if each client had waited for its 404.
"""

from __future__ import annotations

import socket
import struct
import sys

import pytest

from tests.reliability.common import check_data_dir, jobs_by_url, wait_until
from tests.support import (
    MIB,
    OriginProcess,
    assert_clean_log,
    metrics,
    payload_sha256,
    start_host,
)
from tests.tls import make_test_ca

DISK_BYTES_PER_SECOND = 150 * MIB


def finished(host, url: str) -> tuple[str, str | None] | None:
    """(state, error) of url's fill once it has finished, else None."""
    state, error = jobs_by_url(host.data_dir).get(url, (None, None))
    return (state, error) if state in ("completed", "failed", "cancelled") else None


@pytest.fixture
def tls_origin(tmp_path):
    ca = make_test_ca(tmp_path / "ca")
    origin = OriginProcess(tls=ca)
    yield origin, ca
    origin.stop()


def test_a_fill_from_a_tls_origin_faster_than_the_disk_completes_in_one_attempt(
    tls_origin, tmp_path, form
):
    origin, ca = tls_origin
    size = 512 * MIB if form.long else 320 * MIB
    slow_twistd = [sys.executable, "-m", "tests.slow_disk_twistd", str(DISK_BYTES_PER_SECOND)]
    host = start_host(
        tmp_path / "data",
        "--allow-private",
        "--stream-wait",
        "0",  # the miss answers 404 at once, as the test expects
        env={"SSL_CERT_FILE": str(ca.ca_pem)},
        twistd=slow_twistd,
    )
    try:
        path = f"/f/{size}/23/cuda_13.0.0_linux.run"
        url = f"{origin.base}{path}?chunk=1048576"
        assert host.get(f"/blob?url={url}")[0] == 404  # the miss starts the fill
        state, error = wait_until(
            lambda: finished(host, url), timeout=240, what="the fill to finish"
        )
        assert (state, error) == ("completed", None)
        assert origin.gets(path) == 1  # one connection, never dropped and resumed
        (row,) = check_data_dir(host.data_dir)
        assert row["size"] == size and row["sha256"] == payload_sha256(size, 23)
        assert "attempt 1 failed" not in host.log()
    finally:
        host.stop()
    assert_clean_log(host)


def hang_up_at_once(host, path: str) -> None:
    """Send one request and close the connection without waiting for the answer (with a reset,
    as a probe that gave up at its time budget does)."""
    port = int(host.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"HEAD {path} HTTP/1.1\r\nHost: cachehost\r\n\r\n".encode())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_a_storm_of_misses_whose_clients_hang_up_still_fills_every_one(origin, tmp_path):
    host = start_host(
        tmp_path / "data", "--allow-private", "--workers", "4", "--max-fills-per-client", "0"
    )
    try:
        host.wait_for_log("recovered data dir")  # its catalog is made: jobs can be polled
        urls = [f"{origin.base}/f/100000/{i}/probe-{i}.bin" for i in range(30)]
        for url in urls:
            hang_up_at_once(host, f"/blob?url={url}")
        wait_until(lambda: all(finished(host, url) for url in urls), timeout=60, what="30 fills")
        assert {finished(host, url) for url in urls} == {("completed", None)}
        assert metrics(host)["withcache_misses_total"] == 30
        assert len(check_data_dir(host.data_dir)) == 30
    finally:
        host.stop()
    assert_clean_log(host)
