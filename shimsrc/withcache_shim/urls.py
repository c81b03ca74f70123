"""Origin URL facts the rules need, and the cache URL a hit is rewritten to.

`cache_url(server, url)` is `<server>/b/<token>/<basename>`: the token is the whole origin URL
as written, in unpadded URL-safe base64; the basename is the last path segment, percent-quoted
where it is not already URL-safe, or `download` when there is none. Only `binascii` is imported
(not `base64` or `urllib.parse`, which pull in `re`) to keep the shim's start-up short.
"""

import binascii

_B64_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_HEX = "0123456789abcdefABCDEF"
# RFC 3986 pchar without '%' (handled separately so existing escapes are kept as they are).
_SEGMENT_SAFE = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@"
)


def scheme(url: str) -> str:
    """The lower-cased scheme, or '' when the string has none."""
    head, sep, _ = url.partition("://")
    return head.lower() if sep and head.isalnum() else ""


def is_http(url: str) -> bool:
    return scheme(url) in ("http", "https") and authority(url) != ""


def authority(url: str) -> str:
    rest = url.partition("://")[2]
    for stop in "/?#":
        rest = rest.partition(stop)[0]
    return rest


def has_userinfo(url: str) -> bool:
    return "@" in authority(url)


def _path(url: str) -> str:
    rest = url.partition("://")[2].partition("#")[0]
    cut = min((p for p in (rest.find("/"), rest.find("?")) if p >= 0), default=len(rest))
    return rest[cut:].partition("?")[0]


def last_segment(url: str) -> str:
    """The raw last path segment ('' for none, for a trailing slash, and for '.'/'..')."""
    segment = _path(url).rpartition("/")[2]
    return "" if segment in (".", "..") else segment


def dot_segment(url: str) -> bool:
    """Whether the path ends in '.' or '..' (which the tools resolve before naming a file)."""
    return _path(url).rpartition("/")[2] in (".", "..")


def has_query(url: str) -> bool:
    return "?" in url.partition("#")[0]


def wget_name(url: str) -> str:
    """The cache URL's last segment from which wget (1.21, default --restrict-file-names)
    names the file exactly as it would for `url` itself.

    For the origin URL wget saves `unescape(last segment or "index.html")`, plus `?` and
    `unescape(query)` when the URL has a query (even an empty one); for the cache URL, which
    has no query, it saves `unescape(<name>)`. Both then go through the same escaping of '/'
    and control bytes. So the name is that string quoted as one path segment: existing %XX
    escapes kept (they decode to the same bytes), '?' and '/' and every other byte that may
    not stand in a segment percent-encoded (a stray '%' too, which wget keeps as written).
    """
    rest = url.partition("#")[0]
    name = last_segment(url) or "index.html"
    if "?" in rest:
        name += "?" + rest.partition("?")[2]
    return quote_segment(name)


# Query parameters that carry someone's credentials: a command line with one passes through
# (the cache-host refuses such URLs too: the same lists as withcache/keys.py, kept equal by a
# test). A name is credential-like when it is one of CREDENTIAL_PARAMS or contains one of
# CREDENTIAL_PARTS, unless it is a signature parameter of a presigned URL, which is meant to
# travel with the URL and which the host drops from its keys.
_CREDENTIAL_PARAMS = (
    "key auth authorization bearer pass passcode passphrase pwd sid phpsessid credential"
    " credentials access_key accesskey private_key privatekey license_key licensekey"
)
_CREDENTIAL_PARTS = (
    "token secret password passwd apikey api_key api-key session jwt authkey auth_key"
)
_SIGNATURE_PARAMS = (
    "x-amz-algorithm x-amz-credential x-amz-date x-amz-expires x-amz-signedheaders"
    " x-amz-signature x-amz-security-token awsaccesskeyid signature expires key-pair-id policy"
    " x-goog-algorithm x-goog-credential x-goog-date x-goog-expires x-goog-signedheaders"
    " x-goog-signature googleaccessid sv ss srt sp se st spr sig sr si sip ses sdd skoid sktid"
    " skt ske sks skv saoid suoid scid sduoid ossaccesskeyid security-token"
    " x-oss-signature-version x-oss-credential x-oss-date x-oss-expires x-oss-signature"
    " x-oss-additional-headers x-oss-security-token q-sign-algorithm q-ak q-sign-time"
    " q-key-time q-header-list q-url-param-list q-signature x-cos-security-token __token__"
    " hdnts hdnea"
)
CREDENTIAL_PARAMS = _CREDENTIAL_PARAMS.split()
CREDENTIAL_PARTS = _CREDENTIAL_PARTS.split()
SIGNATURE_PARAMS = _SIGNATURE_PARAMS.split()


def param_name(raw: str) -> bytes:
    """A query parameter's name as the lists are compared with it: '+' is a space, %XX
    escapes decoded (a malformed one kept as written), ASCII letters lower-cased."""
    data = raw.encode("utf-8", "surrogateescape").replace(b"+", b" ")
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] == 0x25 and _is_hex_pair(data, i + 1):
            out.append(int(data[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(data[i])
            i += 1
    return bytes(out).lower()


def credential_param(url: str) -> str | None:
    """The first credential-like query parameter's name (normalised), or None."""
    query = url.partition("#")[0].partition("?")[2]
    for param in query.split("&"):
        name = param_name(param.partition("=")[0]).decode("latin-1")
        if name in SIGNATURE_PARAMS:
            continue
        if name in CREDENTIAL_PARAMS or any(part in name for part in CREDENTIAL_PARTS):
            return name
    return None


def escapes_a_control_byte(segment: str) -> bool:
    """Whether a quoted segment holds %00-%1F or %7F: the cache-host routes no such name."""
    at = segment.find("%")
    while at >= 0:
        pair = segment[at + 1 : at + 3].upper()
        if len(pair) == 2 and ((pair[0] in "01" and pair[1] in _HEX) or pair == "7F"):
            return True
        at = segment.find("%", at + 1)
    return False


def token(url: str) -> str:
    raw = binascii.b2a_base64(url.encode("utf-8", "surrogateescape"), newline=False)
    return raw.translate(_B64_TO_URLSAFE).rstrip(b"=").decode("ascii")


def quote_segment(segment: str) -> str:
    out = []
    data = segment.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(data):
        ch = chr(data[i])
        if ch in _SEGMENT_SAFE:
            out.append(ch)
        elif ch == "%" and _is_hex_pair(data, i + 1):
            out.append(data[i : i + 3].decode("ascii"))
            i += 2
        else:
            out.append(f"%{data[i]:02X}")
        i += 1
    return "".join(out)


def _is_hex_pair(data: bytes, at: int) -> bool:
    return at + 1 < len(data) and chr(data[at]) in _HEX and chr(data[at + 1]) in _HEX


def basename(url: str) -> str:
    return quote_segment(last_segment(url)) or "download"


def cache_url(server: str, url: str, name: str | None = None) -> str:
    return f"{server}/b/{token(url)}/{basename(url) if name is None else name}"


def on_server(url: str, server: str) -> bool:
    """True when the URL already points at the cache (the shim must not wrap it twice)."""
    same_scheme = scheme(url) == server.partition("://")[0].lower()
    return same_scheme and authority(url).lower() == authority(server).lower()
