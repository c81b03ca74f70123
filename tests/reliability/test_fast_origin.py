"""An origin faster than the disk, and clients that hang up on their misses.

A fill from an https:// origin on 127.0.0.1 (the host trusting a test CA through SSL_CERT_FILE)
into a host whose disk is slowed down: the fill pauses and resumes its connection many times and
completes in one attempt with the right bytes. A storm of HEAD misses whose clients close at
once: every miss is counted and causes its fill, as if each client had waited for its 404.
"""

from __future__ import annotations

import sys

import pytest

from tests.reliability.common import check_data_dir, jobs_by_url, wait_until
from tests.support import MIB, OriginProcess, assert_clean_log, payload_sha256, start_host
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
