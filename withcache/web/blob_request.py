"""The one parser of read-path requests: which origin URL a GET|HEAD of /b/<token>/<name> or
/blob?url=<origin> names.

Both the fast path (a hit the index knows, answered before Klein's routing, on the host and in
serving workers) and the Klein routes use it: the fast path treats InvalidURL as "not mine, let
the Klein app answer", and the Klein routes let it reach their error handler (a 400 that says
what is wrong).
"""

from __future__ import annotations

import functools
from typing import Any

from withcache.keys import InvalidURL, decode_token


@functools.lru_cache(maxsize=4096)
def token_url(token: str) -> str:
    """The origin URL a /b/ token names (decode_token, remembered: the same few tokens are
    asked for all day). Raises InvalidURL."""
    return decode_token(token)


def query_url(args: dict[bytes, list[bytes]]) -> str:
    """The origin URL of /blob?url=<origin>: exactly one, non-empty, UTF-8. Raises InvalidURL."""
    urls = args.get(b"url")
    if not urls or not urls[0]:
        raise InvalidURL("missing url= query parameter")
    if len(urls) > 1:
        raise InvalidURL("more than one url= query parameter")
    try:
        return urls[0].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidURL("url= is not UTF-8") from None


def requested_url(request: Any) -> str | None:
    """The origin URL a GET|HEAD of /b/<token>/... or /blob?url=... names, from the request's
    unrouted path (postpath); None for any other request. Raises InvalidURL for a malformed
    one."""
    if request.method not in (b"GET", b"HEAD"):
        return None
    path = request.postpath
    if len(path) >= 2 and path[0] == b"b":
        try:
            token = path[1].decode("ascii")
        except UnicodeDecodeError:
            raise InvalidURL("malformed token: not URL-safe base64") from None
        return token_url(token)
    if path == [b"blob"]:
        return query_url(request.args)
    return None


def known_url(request: Any) -> str | None:
    """requested_url for the fast path: None for a malformed request too (the Klein app gives
    it its answer)."""
    try:
        return requested_url(request)
    except InvalidURL:
        return None
