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
    proxy_opt = noproxy_opt = None
    for opt in opts:
        if opt.name == "proxy":
            proxy_opt = opt.value
        elif opt.name == "noproxy":
            noproxy_opt = opt.value
    if noproxy_opt is not None:
        no_proxy, source = noproxy_opt, "--noproxy"
    else:
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
    """curl's Curl_check_noproxy (7.88) for a host name without brackets."""
    if not name or not no_proxy:
        return False
    if no_proxy == "*":
        return True
    ipv4 = _is_ipv4(name)
    if not ipv4 and name.endswith("."):
        name = name[:-1]
    for token in no_proxy.replace("\t", " ").replace(",", " ").split(" "):
        if not token:
            continue
        if ipv4:
            address, slash, bits = token.partition("/")
            if _cidr4(name, address, _atoi(bits) if slash else 0):
                return True
            continue
        if token.endswith("."):
            token = token[:-1]
        if token.startswith("."):
            token = token[1:]
        if len(token) == len(name):
            if token.lower() == name.lower() and token:
                return True
        elif len(token) < len(name):
            tail = name[len(name) - len(token) :]
            if name[len(name) - len(token) - 1] == "." and tail.lower() == token.lower():
                return True
    return False


def _is_ipv4(text: str) -> bool:
    try:
        _socket.inet_pton(_socket.AF_INET, text)
    except (OSError, ValueError):
        return False
    return True


def _atoi(text: str) -> int:
    digits = ""
    for ch in text.lstrip(" \t\n\v\f\r"):
        if not ("0" <= ch <= "9"):
            break
        digits += ch
    return int(digits) if digits else 0


def _cidr4(address: str, network: str, bits: int) -> bool:
    if bits > 32 or not (_is_ipv4(address) and _is_ipv4(network)):
        return False
    a = int.from_bytes(_socket.inet_pton(_socket.AF_INET, address), "big")
    n = int.from_bytes(_socket.inet_pton(_socket.AF_INET, network), "big")
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
    return value is None or value.strip().lower() not in ("off", "no", "0")


def _sepstring(text: str) -> "list[str]":
    """wget's sepstring(): split at commas, skipping the blanks after each comma."""
    if not text:
        return []
    parts = text.split(",")
    return [parts[0]] + [p.lstrip(" \t\n\v\f\r") for p in parts[1:]]


def wget_sufmatch(patterns: "list[str]", host: str) -> bool:
    """wget 1.21.3's sufmatch(): a non-empty pattern that is the host, or a suffix of it
    starting at a dot (in the host or the pattern), in any case."""
    lowered = host.lower()
    for pattern in patterns:
        if not pattern or not lowered.endswith(pattern.lower()):
            continue
        k = len(host) - len(pattern) - 1
        if k == -1 or host[k] == "." or pattern[0] == ".":
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
