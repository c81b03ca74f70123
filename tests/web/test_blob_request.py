"""withcache.web.blob_request: the one parser the fast path and the Klein routes share."""

from __future__ import annotations

import pytest
from twisted.web.test.requesthelper import DummyRequest

from tests.support import token
from withcache.keys import InvalidURL
from withcache.web.blob_request import known_url, requested_url

URL = "https://vendor.example.com/a.run?v=1"


def request(path: bytes, method: bytes = b"GET", args: dict | None = None) -> DummyRequest:
    made = DummyRequest(path.lstrip(b"/").split(b"/"))
    made.method = method
    made.args = args or {}
    return made


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_both_forms_name_the_same_origin_url(method):
    assert requested_url(request(f"/b/{token(URL)}/a.run".encode(), method)) == URL
    assert requested_url(request(b"/blob", method, {b"url": [URL.encode()]})) == URL


@pytest.mark.parametrize(
    "made",
    [
        request(b"/healthz"),
        request(b"/admin/x"),
        request(f"/b/{token(URL)}/a.run".encode(), b"POST"),
        request(b"/blob/extra", args={b"url": [URL.encode()]}),
    ],
)
def test_other_requests_are_not_the_parsers(made):
    assert requested_url(made) is None
    assert known_url(made) is None


@pytest.mark.parametrize(
    ("made", "reason"),
    [
        (request(b"/b/!!/x"), "malformed token"),
        (request(b"/b/\xff/x"), "malformed token"),
        (request(b"/blob"), "missing url"),
        (request(b"/blob", args={b"url": [b""]}), "missing url"),
        (
            request(b"/blob", args={b"url": [b"https://a.example/1", b"https://a.example/2"]}),
            "more than one",
        ),
        (request(b"/blob", args={b"url": [b"\xff"]}), "not UTF-8"),
    ],
)
def test_malformed_requests_raise_for_the_routes_and_are_none_for_the_fast_path(made, reason):
    with pytest.raises(InvalidURL, match=reason):
        requested_url(made)
    assert known_url(made) is None
