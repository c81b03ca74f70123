"""Cache keys: the normalised form of an origin URL, and the token codec used in /b/ paths.

The key is what two requests must agree on to share an artifact. Scheme and host are
case-insensitive and default ports are implied, so those are normalised; the path is kept
byte-for-byte because origins may treat it case-sensitively.

The query is handled by a mode (`--keep-query`, `--drop-query`, or neither):

- "signed" (the default) drops the signature parameters of presigned and CDN URLs, which change
  on every request, and keeps every other parameter, byte-for-byte and in the order sent. So
  `tool.sh?version=1.2.3` and `tool.sh?version=attacker` are two artifacts (issue 13, finding 6:
  the first of them no longer decides what everyone gets), while two presigned URLs of one S3
  object share one. A scheme's parameters are dropped only when its own signature parameter is
  in the query (`sp` or `Expires` alone select content as far as we know). Parameters are not
  sorted: reordering is not something two requests of the same script do, and treating
  `?a=1&b=2` and `?b=2&a=1` as one artifact would let a requester name content an origin may
  serve differently (repeated names, order-sensitive parsers); the fewer URLs a key merges,
  the fewer ways to poison it. Empty parameters (`&&`, a trailing `&` or `?`) are dropped:
  every query parser ignores them.
- "keep" keeps the query exactly as sent; "drop" drops it whole (the old default).

In every mode a URL whose query carries a credential-like parameter (`access_token`, `api_key`,
`password`, ... below) is refused like one with `user:password@`: whatever it fetched would be
shared with everyone and its token listed. Parameter names are compared after percent-decoding
('+' is a space) and ASCII lower-casing, as origins read them; parameters are separated by '&'.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes, urlsplit

CACHEABLE_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}

SIGNED, KEEP, DROP = "signed", "keep", "drop"
QUERY_MODES = (SIGNED, KEEP, DROP)
DEFAULT_QUERY = SIGNED

_TOKEN_RE = re.compile(r"\A[A-Za-z0-9_-]+={0,2}\Z")


class InvalidURL(ValueError):
    """An origin URL or token that cannot name a cacheable artifact; the message is one line."""


@dataclass(frozen=True)
class SignatureScheme:
    """The query parameters one presigned-URL scheme adds: dropped from keys when one of its
    markers (its signature) is in the query. Names are lower case."""

    name: str
    markers: frozenset[str]
    params: frozenset[str]


def _scheme(name: str, markers: str, params: str) -> SignatureScheme:
    return SignatureScheme(name, frozenset(markers.split()), frozenset(params.split()))


SIGNATURE_SCHEMES = (
    _scheme(
        "AWS SigV4",
        "x-amz-signature",
        "x-amz-algorithm x-amz-credential x-amz-date x-amz-expires x-amz-signedheaders"
        " x-amz-signature x-amz-security-token",
    ),
    _scheme("AWS SigV2", "awsaccesskeyid", "awsaccesskeyid signature expires x-amz-security-token"),
    _scheme("CloudFront", "key-pair-id", "expires signature key-pair-id policy"),
    _scheme(
        "Google Cloud Storage V4",
        "x-goog-signature",
        "x-goog-algorithm x-goog-credential x-goog-date x-goog-expires x-goog-signedheaders"
        " x-goog-signature",
    ),
    _scheme("Google Cloud Storage V2", "googleaccessid", "googleaccessid expires signature"),
    _scheme(
        "Azure SAS",
        "sig",
        "sv ss srt sp se st spr sig sr si sip ses sdd skoid sktid skt ske sks skv saoid suoid"
        " scid sduoid",
    ),
    _scheme("Alibaba OSS V1", "ossaccesskeyid", "ossaccesskeyid expires signature security-token"),
    _scheme(
        "Alibaba OSS V4",
        "x-oss-signature",
        "x-oss-signature-version x-oss-credential x-oss-date x-oss-expires x-oss-signature"
        " x-oss-additional-headers x-oss-security-token",
    ),
    _scheme(
        "Tencent COS",
        "q-signature",
        "q-sign-algorithm q-ak q-sign-time q-key-time q-header-list q-url-param-list"
        " q-signature x-cos-security-token",
    ),
    _scheme("Akamai token", "__token__ hdnts hdnea", "__token__ hdnts hdnea"),
)
# Every name any scheme drops. Never credential-like (they are meant to be shared with the
# URL), and their values never shown in logs or the UI.
SIGNATURE_PARAMS = frozenset().union(*(s.params for s in SIGNATURE_SCHEMES))

# Credential-like parameter names: these exactly, or any name containing one of the parts,
# unless it is a signature parameter (X-Amz-Security-Token). The shims carry the same lists
# (shimsrc/withcache_shim/urls.py; a test keeps them equal).
_CREDENTIAL_NAMES = (
    "key auth authorization bearer pass passcode passphrase pwd sid phpsessid credential"
    " credentials access_key accesskey private_key privatekey license_key licensekey"
)
CREDENTIAL_PARAMS = frozenset(_CREDENTIAL_NAMES.split())
CREDENTIAL_PARTS = (
    "token",
    "secret",
    "password",
    "passwd",
    "apikey",
    "api_key",
    "api-key",
    "session",
    "jwt",
    "authkey",
    "auth_key",
)


def param_name(raw: str) -> str:
    """A query parameter's name as compared with the lists: percent-decoded ('+' is a space)
    and ASCII lower-cased; bytes that are not ASCII stay as they are (as latin-1 text)."""
    return unquote_to_bytes(raw.replace("+", " ")).lower().decode("latin-1")


def is_credential_param(name: str) -> bool:
    """Whether a (normalised) parameter name looks like it carries someone's credentials."""
    if name in SIGNATURE_PARAMS:
        return False
    return name in CREDENTIAL_PARAMS or any(part in name for part in CREDENTIAL_PARTS)


def is_sensitive_param(name: str) -> bool:
    """Whether a parameter's value must not be shown (logs, errors, the UI)."""
    return name in SIGNATURE_PARAMS or is_credential_param(name)


def _params(query: str) -> list[tuple[str, str]]:
    """(parameter as written, normalised name) for each '&'-separated parameter."""
    return [(p, param_name(p.partition("=")[0])) for p in query.split("&")]


def credential_param(query: str) -> str | None:
    """The (normalised) name of the first credential-like parameter of a query, if any."""
    for _raw, name in _params(query):
        if is_credential_param(name):
            return name
    return None


def signed_query(query: str) -> str:
    """The query without the parameters of the signature schemes it carries, nor empty ones;
    the rest byte-for-byte in their order."""
    params = [(raw, name) for raw, name in _params(query) if raw]
    present = {name for _raw, name in params}
    dropped: set[str] = set()
    for scheme in SIGNATURE_SCHEMES:
        if scheme.markers & present:
            dropped |= scheme.params
    return "&".join(raw for raw, name in params if name not in dropped)


def cache_key(url: str, *, query: str = DEFAULT_QUERY) -> str:
    """Normalise an origin URL into its cache key under a query mode, or raise InvalidURL."""
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
    credential = credential_param(parts.query)
    if credential is not None:
        # The same for a personal token in the query: the artifact it fetched would be
        # everyone's, and the token in the catalog. The name only: never echo a value.
        raise InvalidURL(f"URLs with credentials are not cacheable (query parameter {credential})")
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    key = f"{scheme}://{netloc}{parts.path or '/'}"
    if query == SIGNED:
        kept = signed_query(parts.query)
    elif query == KEEP:
        kept = parts.query
    elif query == DROP:
        kept = ""
    else:
        raise ValueError(f"query mode must be one of {', '.join(QUERY_MODES)}, not {query!r}")
    return f"{key}?{kept}" if kept else key


@functools.lru_cache(maxsize=4096)
def remembered_key(url: str, query: str) -> str:
    """cache_key, remembered for the hit path: the same few URLs are asked for all day (a
    pure function, so never stale; an InvalidURL is raised again each time)."""
    return cache_key(url, query=query)


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
