"""The one rule for the Content-Type the read path serves a stored artifact with."""

from __future__ import annotations

import pytest

from withcache.mediatypes import OCTET_STREAM, served_type

ACTIVE = [
    "text/html",
    "text/html; charset=utf-8",
    "TEXT/HTML",
    " text/html ",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "application/rss+xml",
    "application/vnd.wap.xhtml+xml",
    "application/xslt+xml",
    "text/xsl",
    "text/css",
    "text/javascript",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "text/ecmascript",
    "text/jscript",
    "text/livescript",
    "text/javascript1.5",
    "multipart/x-mixed-replace; boundary=x",
    "multipart/related",
    "text/x-server-parsed-html",
]

UNPARSEABLE = [
    None,
    "",
    "   ",
    "html",
    "text/",
    "/html",
    "text/plain, text/html",  # a browser takes the last type of a list
    "text/plain\r\nX-Injected: 1",
    "text/plain\x00",
    "text/pl\xe4in",  # not ASCII (the origin's header decoded as latin-1)
    "text/plain text/html",
]

PASSIVE = [
    "application/octet-stream",
    "application/x-sh",
    "application/gzip",
    "application/x-tar",
    "application/zip",
    "application/vnd.debian.binary-package",
    "application/x-rpm",
    "application/json",
    "application/pdf",
    "image/png",
    "image/jpeg",
    "text/plain",
    "text/plain; charset=utf-8",
    "video/mp4",
]


@pytest.mark.parametrize("stored", ACTIVE)
def test_active_content_types_are_served_as_octet_stream(stored):
    assert served_type(stored) == OCTET_STREAM


@pytest.mark.parametrize("stored", UNPARSEABLE)
def test_missing_and_malformed_types_are_served_as_octet_stream(stored):
    assert served_type(stored) == OCTET_STREAM


@pytest.mark.parametrize("stored", PASSIVE)
def test_passive_types_are_served_as_stored(stored):
    assert served_type(stored) == stored
