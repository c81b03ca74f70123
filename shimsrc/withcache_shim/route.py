"""The route the real tool will take to the cache-host: direct, or through an HTTP proxy.

    curl_route(server, opts, env) / wget_route(server, opts, env) -> Route

The probe must take the same route as the exec'd command, so that a probe that succeeds means
the download will succeed. Each function decides as its tool does (curl 7.88, wget 1.21.3;
checked against the installed tools by tests/shim/test_route.py):

curl: `--noproxy LIST` (else `no_proxy`, else `NO_PROXY`; empty counts as unset) names hosts
    reached directly, even past `-x`: `*` alone is every host; tokens are separated by commas
    or blanks; a host name matches a token equal to it or to one of its parent domains
    (leading and trailing dots ignored); an IPv4 address matches an address or CIDR token.
    Otherwise the proxy is `-x/--proxy` (an empty one means none), else `http_proxy` (for an
    http:// server; never `HTTP_PROXY`) or `https_proxy`/`HTTPS_PROXY` (https://), else
    `all_proxy`/`ALL_PROXY`. A proxy without a port is on 1080.
wget: no proxy with `--no-proxy`, `-Y off`, `--proxy=off` or `-e use_proxy=off`; none when a
    `no_proxy` entry (comma-separated, blanks after a comma skipped; `NO_PROXY` is not read;
    `-e no_proxy=...` adds entries, an empty one clears them) is the host name or a suffix
    of it that starts at a dot (`lab` and `.lab` match `cache.lab`, `he.lab` does not; no
    `*`, no CIDR, any case); else `-e http_proxy=...`, else
    `http_proxy` (`https_proxy` for https://; no upper case, no `all_proxy`). A proxy
    without a port is on 80.

A route the in-process probe cannot take (a SOCKS or HTTPS proxy, a proxy URL with
credentials, a malformed one) is `Route.unsupported`: the command line passes through.
"""

import _socket

from .argscan import Opt


class Route:
    """`proxy` is (host, port) or None for direct; `why` says how it was decided, and is the
    pass-through reason when `usable` is false."""

    __slots__ = ("proxy", "usable", "why")

    def __init__(self, proxy: "tuple[str, int] | None", why: str, usable: bool = True) -> None:
        self.proxy = proxy
        self.why = why
        self.usable = usable

    def describe(self) -> str:
        if not self.usable:
            return f"none the probe can take ({self.why})"
        if self.proxy is None:
            return f"direct ({self.why})"
        return f"through the HTTP proxy {self.proxy[0]}:{self.proxy[1]} ({self.why})"


def server_host(server: str) -> str:
    authority = server.partition("://")[2].partition("/")[0]
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else authority
    return authority.rpartition(":")[0] if ":" in authority else authority


def _env(env, *names: str) -> "tuple[str, str] | None":
    """The first of `names` set to a non-empty value, and that value."""
    for name in names:
        value = env.get(name, "")
        if value:
            return name, value
    return None


# --- curl ------------------------------------------------------------------------------------


def curl_route(server: str, opts: "list[Opt]", env) -> Route:
    scheme = server.partition("://")[0].lower()
    host = server_host(server)
    proxy_opt: str | None = None
    noproxy_opt: str | None = None
    for opt in opts:
        if opt.name == "proxy":
            proxy_opt = opt.value
        elif opt.name == "noproxy":
            noproxy_opt = opt.value
    no_proxy: str | None = noproxy_opt
    source = "--noproxy"
    if noproxy_opt is None:
        found = _env(env, "no_proxy", "NO_PROXY")
        no_proxy, source = (found[1], found[0]) if found else (None, "")
    if curl_noproxy(host, no_proxy):
        return Route(None, f"{host} is in {source}")
    if proxy_opt is not None:
        if not proxy_opt:
            return Route(None, "-x is empty")
        return _proxy(proxy_opt, 1080, "-x", curl=True)
    names = [f"{scheme}_proxy"] + (["HTTPS_PROXY"] if scheme == "https" else [])
    found = _env(env, *names, "all_proxy", "ALL_PROXY")
    if found is None:
        return Route(None, "no proxy is set")
    return _proxy(found[1], 1080, f"${found[0]}", curl=True)


def curl_noproxy(name: str, no_proxy: "str | None") -> bool:
    """curl's Curl_check_noproxy (7.88) for a host name without brackets (on bytes, with
    ASCII case folding, as curl compares)."""
    if not name or not no_proxy:
        return False
    if no_proxy == "*":
        return True
    host = _bytes(name)
    ipv4 = _ipv4(name) is not None
    if not ipv4 and host.endswith(b"."):
        host = host[:-1]
    for token in _bytes(no_proxy).replace(b"\t", b" ").replace(b",", b" ").split(b" "):
        if not token:
            continue
        if ipv4:
            address, slash, bits = token.partition(b"/")
            text = address.decode("utf-8", "surrogateescape")
            if _cidr4(name, text, _atoi(bits) if slash else 0):
                return True
            continue
        if token.endswith(b"."):
            token = token[:-1]
        if token.startswith(b"."):
            token = token[1:]
        n, t = len(host), len(token)
        if t == n and token.lower() == host.lower():
            return True
        if t < n and host[n - t - 1 : n - t] == b"." and host[n - t :].lower() == token.lower():
            return True
    return False


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _ipv4(text: str) -> "int | None":
    """The address as an integer if `text` is a dotted quad as inet_pton reads one."""
    try:
        return int.from_bytes(_socket.inet_pton(_socket.AF_INET, text), "big")
    except (OSError, ValueError, UnicodeError):
        return None


def _atoi(text: bytes) -> int:
    """C's atoi (a negative number comes back negative; no digits is 0)."""
    text = text.lstrip(b" \t\n\v\f\r")
    negative = text[:1] == b"-"
    if text[:1] in (b"-", b"+"):
        text = text[1:]
    digits = b""
    for byte in text:
        if not 0x30 <= byte <= 0x39:
            break
        digits += bytes([byte])
    number = int(digits) if digits else 0
    return -number if negative else number


def _cidr4(address: str, network: str, bits: int) -> bool:
    a, n = _ipv4(address), _ipv4(network)
    if bits < 0 or bits > 32 or a is None or n is None:
        return False
    if bits and bits != 32:
        mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
        return (a ^ n) & mask == 0
    return a == n


# --- wget ------------------------------------------------------------------------------------

# The `-e` commands the shim understands (wget's own spelling: case, '-' and '_' ignored).
WGET_COMMANDS = ("useproxy", "httpproxy", "httpsproxy", "noproxy", "robots")


def wget_command(text: str) -> "tuple[str, str] | None":
    """An `-e` command as (name without '-'/'_', lower-cased; value), None if malformed."""
    name, eq, value = text.partition("=")
    name = name.strip(" \t\n\v\f\r")
    if not eq or not name:
        return None
    if not all(c.isascii() and (c.isalnum() or c in "-_") for c in name):
        return None
    return name.replace("-", "").replace("_", "").lower(), value.strip(" \t\n\v\f\r")


def wget_route(server: str, opts: "list[Opt]", env) -> Route:
    scheme = server.partition("://")[0].lower()
    host = server_host(server)
    use_proxy, use_why = True, ""
    found = _env(env, "no_proxy")
    no_proxy = _sepstring(found[1]) if found else []
    proxy_opt = None
    for opt in opts:
        if opt.name == "proxy":
            use_proxy, use_why = _wget_on(opt.value), "--proxy/-Y"
        elif opt.name == "no-proxy":
            use_proxy, use_why = False, "--no-proxy"
        elif opt.name == "execute" and opt.value is not None:
            command = wget_command(opt.value)
            if command is None:
                continue
            name, value = command
            if name == "useproxy":
                use_proxy, use_why = _wget_on(value), "-e use_proxy"
            elif name == "noproxy":
                no_proxy = no_proxy + _sepstring(value) if value else []
            elif name == f"{scheme}proxy":
                proxy_opt = value
    if not use_proxy:
        return Route(None, f"{use_why} turns proxies off")
    if wget_sufmatch(no_proxy, host):
        return Route(None, f"{host} matches no_proxy")
    if proxy_opt is not None:
        proxy, source = proxy_opt, f"-e {scheme}_proxy"
    else:
        proxy, source = env.get(f"{scheme}_proxy", ""), f"${scheme}_proxy"
    if not proxy:
        return Route(None, "no proxy is set")
    return _proxy(proxy, 80, source, curl=False)


def _wget_on(value: "str | None") -> bool:
    return value is None or value.lower() not in ("off", "no", "0")


def _sepstring(text: str) -> "list[str]":
    """wget's sepstring(): split at commas, skipping the blanks after each comma."""
    if not text:
        return []
    parts = text.split(",")
    return [parts[0]] + [p.lstrip(" \t\n\v\f\r") for p in parts[1:]]


def wget_sufmatch(patterns: "list[str]", host: str) -> bool:
    """wget 1.21.3's sufmatch(): a non-empty pattern that is the host, or a suffix of it
    starting at a dot (in the host or the pattern), in any case."""
    what = _bytes(host)
    for text in patterns:
        pattern = _bytes(text)
        if not pattern or not what.lower().endswith(pattern.lower()):
            continue
        k = len(what) - len(pattern) - 1
        if k == -1 or what[k : k + 1] == b"." or pattern[:1] == b".":
            return True
    return False


# --- proxy URLs -----------------------------------------------------------------------------


def _proxy(value: str, default_port: int, source: str, curl: bool) -> Route:
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "http", value
    if scheme.lower() != "http":
        return Route(None, f"{source} is a {scheme} proxy", usable=False)
    authority = rest.partition("/")[0]
    if "@" in authority:
        return Route(None, f"{source} carries credentials", usable=False)
    if authority.startswith("["):
        end = authority.find("]")
        host, port_text = authority[1:end], authority[end + 2 :] if end > 0 else ""
        if end < 0:
            return Route(None, f"{source} is malformed", usable=False)
    else:
        host, _, port_text = authority.partition(":")
    if not host or (port_text and not (port_text.isascii() and port_text.isdigit())):
        return Route(None, f"{source} is malformed", usable=False)
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        return Route(None, f"{source} is malformed", usable=False)
    return Route((host, port), source)
