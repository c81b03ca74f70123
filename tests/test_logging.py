"""--log-format json: every line parses, requests and job transitions are events, no secrets."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.support import OriginProcess, start_host
from withcache.logs import redact_text, redact_url


def test_json_logs_parse_and_never_contain_secrets(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "netrc").write_text("machine 127.0.0.1 login lab password s3cretpw\n")
    origin = OriginProcess()
    try:
        # --stream-wait 0: the miss is a 404 at once (its log line is what is checked).
        host = start_host(
            data,
            "--allow-private",
            "--log-format",
            "json",
            "--netrc-over-http",
            "--stream-wait",
            "0",
        )
    except BaseException:
        origin.stop()
        raise
    try:
        url = f"{origin.base}/f/5000/1/driver.run?X-Amz-Signature=SIGSECRET"
        subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-H", "Authorization: Bearer TOPSECRET",
             "-b", "session=COOKIESECRET", host.blob_url(url)],
            check=True, timeout=60,
        )  # fmt: skip
        host.wait_for_log("completed")
        status, _ = host.get(f"/blob?url={url}")
        assert status == 200
        # The fill sent the host's own credentials to the origin (over http: opted in).
        (seen,) = [s for s in origin.seen() if s["path"] == "/f/5000/1/driver.run"]
        assert seen["authorization"] == "Basic bGFiOnMzY3JldHB3"
    finally:
        host.stop()
        origin.stop()
    lines = host.log().splitlines()
    events = [json.loads(line) for line in lines]
    assert all({"time", "level", "namespace", "message"} <= e.keys() for e in events)
    requests = [e for e in events if e.get("method") in ("GET", "HEAD")]
    assert {(e["path"], e["status"]) for e in requests} >= {("/b/…/file", 404), ("/blob", 200)}
    states = [e["state"] for e in events if "state" in e and "id" in e]
    assert states == ["running", "completed"]
    text = "\n".join(lines)
    for secret in ("SIGSECRET", "TOPSECRET", "COOKIESECRET", "s3cretpw", "bGFiOnMzY3JldHB3"):
        assert secret not in text


def test_no_access_log_drops_the_per_request_lines_but_metrics_still_count(tmp_path):
    host = start_host(tmp_path / "data", "--log-format", "json", "--no-access-log")
    try:
        (tmp_path / "a.bin").write_bytes(b"a" * 1000)
        host.seed("https://vendor.example/a.bin", tmp_path / "a.bin")
        path = host.blob_url("https://vendor.example/a.bin")[len(host.url) :]
        for _ in range(3):
            assert host.get(path) == (200, b"a" * 1000)
        assert host.get("/healthz")[0] == 200
        status, metrics = host.get("/metrics")
        assert status == 200 and b"withcache_hits_total 3.0" in metrics
    finally:
        host.stop()
    events = [json.loads(line) for line in host.log().splitlines()]
    assert [e for e in events if e.get("method")] == []
    assert any("listening on" in e["message"] for e in events)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://u:pw@e.com:8443/a/b?version=1.2&X-Amz-Signature=abc&X-Amz-Credential=AK#f",
            "https://e.com:8443/a/b?version=1.2&X-Amz-Signature=…&X-Amz-Credential=…",
        ),
        (
            "https://e.com/f?sig=S&sv=2024&sp=r&arch=arm64",
            "https://e.com/f?sig=…&sv=…&sp=…&arch=arm64",
        ),
        (
            "https://e.com/f?access%5Ftoken=T&flag&Key-Pair-Id=K",
            "https://e.com/f?access%5Ftoken=…&flag&Key-Pair-Id=…",
        ),
        ("https://e.com/f?", "https://e.com/f"),
        ("https://e.com:bad/f", "<unparseable URL>"),
    ],
)
def test_finding6_redact_url_keeps_names_and_plain_values_and_masks_sensitive_ones(url, shown):
    assert redact_url(url) == shown


def test_finding6_redact_text_redacts_every_url_in_an_error_text():
    text = (
        'cannot fetch https://a.example/x?token=T1 (redirect to "http://b.example/?Signature=S2")'
    )
    assert redact_text(text) == (
        'cannot fetch https://a.example/x?token=… (redirect to "http://b.example/?Signature=…")'
    )


def test_text_request_lines_name_the_client_address(tmp_path):
    """The README promises method, path, status, bytes and client on each request line."""
    host = start_host(tmp_path / "data")
    try:
        assert host.get("/healthz")[0] == 200
        log = host.wait_for_log("GET /healthz 200")
    finally:
        host.stop()
    [line] = [line for line in log.splitlines() if "GET /healthz 200" in line]
    assert re.search(r"GET /healthz 200 \d+ 127\.0\.0\.1$", line), line
