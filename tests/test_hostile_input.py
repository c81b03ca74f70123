"""Hostile input on the open read path: never a 500, never a traceback, always a clear answer."""

from __future__ import annotations

import base64
import http.client
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import assert_clean_log, start_host, write_file
from tests.support import raw_request as request

ORIGIN = "https://vendor.example.com/hostile/blob.bin"


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    host = start_host(tmp / "data", "--curate")
    host.seed(ORIGIN, write_file(tmp / "blob", 10_000))
    yield host
    host.stop()
    assert_clean_log(host)


def assert_sane(status: int, body: bytes) -> None:
    assert status < 500, (status, body[:300])
    assert b"Traceback" not in body and b"twisted.python.failure" not in body


path_text = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#?"),
    max_size=300,
)
token_ish = st.one_of(
    path_text,
    st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    st.text(max_size=100).map(lambda t: base64.urlsafe_b64encode(t.encode()).decode()),
)
url_values = st.one_of(
    st.text(max_size=200),
    st.sampled_from(
        ["file:///etc/passwd", "gopher://x", "http://", "https://[::1", "http://a:b@c/"]
    ),
    st.builds(lambda s: f"https://vendor.example.com/{s}", st.text(max_size=80)),
)
# What a client can put in a header: Latin-1, no CR/LF (http.client refuses the rest itself).
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=80,
)
range_specs = st.one_of(
    st.builds("{}-{}".format, st.integers(0, 20_000), st.integers(0, 20_000)),
    st.builds("{}-".format, st.integers(0, 20_000)),
    st.builds("-{}".format, st.integers(0, 20_000)),
)
ranges = st.one_of(
    header_text,
    st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(-5, 20_000), st.integers(-5, 20_000)),
    st.builds(lambda a: f"bytes=-{a}", st.integers(0, 20_000)),
    st.just("bytes=0-1,5-9"),
    # Many ranges, overlapping or not: the shapes of a range amplification attack.
    st.lists(range_specs, min_size=2, max_size=400).map(lambda specs: "bytes=" + ",".join(specs)),
    st.integers(2, 1000).map(lambda n: "bytes=" + ",".join(["0-"] * n)),
)
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(token=token_ish, name=path_text, method=st.sampled_from(["GET", "HEAD"]))
def test_any_token_and_name(target, token, name, method):
    status, body = request(target, method, "/b/" + quote(token, safe="") + "/" + quote(name))
    assert_sane(status, body)
    # 308: the router's canonical form of a path with an empty segment (e.g. a trailing "/").
    assert status in (200, 308, 400, 404)


@SETTINGS
@given(url=url_values)
def test_any_url_parameter(target, url):
    status, body = request(target, "GET", "/blob?url=" + quote(url, safe=""))
    assert_sane(status, body)
    assert status in (200, 400, 404)


@SETTINGS
@given(range_header=ranges, if_none_match=header_text)
def test_any_range_and_conditional_header_on_a_hit(target, range_header, if_none_match):
    token = base64.urlsafe_b64encode(ORIGIN.encode()).decode().rstrip("=")
    headers = {"Range": range_header}
    if if_none_match.strip():
        headers["If-None-Match"] = if_none_match.strip()
    status, body = request(target, "GET", f"/b/{token}/blob.bin", headers)
    assert_sane(status, body)
    assert status in (200, 206, 304, 416)
    assert len(body) <= 10_000  # no answer is longer than the blob


def test_very_long_paths_and_headers_are_refused_cleanly(target):
    for path, headers in (
        ("/b/" + "A" * 20_000 + "/x", {}),
        ("/b/" + "QQ" * 2_000 + "/x", {}),
        ("/healthz", {"X-Junk": "j" * 20_000}),
        ("/healthz", {f"X-H{i}": "v" for i in range(600)}),
    ):
        try:
            status, body = request(target, "GET", path, headers)
        except (http.client.RemoteDisconnected, ConnectionResetError):
            continue  # twisted.web drops a request line or header block over its limits
        assert_sane(status, body)
    assert request(target, "GET", "/healthz")[0] == 200


def test_a_range_that_is_not_ascii_is_ignored_and_the_whole_blob_served(target):
    token = base64.urlsafe_b64encode(ORIGIN.encode()).decode().rstrip("=")
    status, body = request(target, "GET", f"/b/{token}/blob.bin", {"Range": "bytes=\x80-1"})
    assert (status, len(body)) == (200, 10_000)


def test_a_suffix_range_longer_than_the_blob_is_the_whole_blob(target):
    token = base64.urlsafe_b64encode(ORIGIN.encode()).decode().rstrip("=")
    status, body = request(target, "GET", f"/b/{token}/blob.bin", {"Range": "bytes=-10001"})
    assert (status, len(body)) == (206, 10_000)
