"""Cache keys: the normalised form of an origin URL, and the token codec used in /b/ paths.

The key is what two requests must agree on to share an artifact. Scheme and host are
case-insensitive and default ports are implied, so those are normalised; the path is kept
byte-for-byte because origins may treat it case-sensitively. The query is dropped by default
because CDN and presigned URLs carry per-request signatures in it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from urllib.parse import urlsplit

CACHEABLE_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}

_TOKEN_RE = re.compile(r"\A[A-Za-z0-9_-]+={0,2}\Z")


class InvalidURL(ValueError):
    """An origin URL or token that cannot name a cacheable artifact; the message is one line."""


def cache_key(url: str, *, keep_query: bool = False) -> str:
    """Normalise an origin URL into its cache key, or raise InvalidURL."""
    if not isinstance(url, str) or not url:
        raise InvalidURL("empty URL")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise InvalidURL("URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InvalidURL(f"malformed URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in CACHEABLE_SCHEMES:
        raise InvalidURL(f"only http and https URLs are cacheable, not {scheme or 'no scheme'!r}")
    host = parts.hostname
    if not host:
        raise InvalidURL("URL has no host")
    if parts.username is not None or parts.password is not None:
        # A shared cache must not key, list or replay a URL that embeds someone's credentials.
        raise InvalidURL("URLs with credentials are not cacheable")
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    key = f"{scheme}://{netloc}{parts.path or '/'}"
    if keep_query and parts.query:
        key += f"?{parts.query}"
    return key


@functools.lru_cache(maxsize=4096)
def remembered_key(url: str, keep_query: bool) -> str:
    """cache_key, remembered for the hit path: the same few URLs are asked for all day (a
    pure function, so never stale; an InvalidURL is raised again each time)."""
    return cache_key(url, keep_query=keep_query)


def encode_token(url: str) -> str:
    """The /b/ path token for an origin URL: unpadded URL-safe base64 of the whole URL."""
    return base64.urlsafe_b64encode(url.encode("utf-8")).rstrip(b"=").decode("ascii")


def decode_token(token: str) -> str:
    """The origin URL a token names; padded tokens are tolerated. Raises InvalidURL."""
    if not _TOKEN_RE.match(token):
        raise InvalidURL("malformed token: not URL-safe base64")
    body = token.rstrip("=")
    if len(body) % 4 == 1:
        raise InvalidURL("malformed token: impossible base64 length")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        return raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidURL("malformed token: does not decode to a UTF-8 URL") from None
