"""Probe an `http://` cache-host in process: one HTTP/1.1 HEAD request over a socket.

    head(target, via=None) -> Answer

`target` is the cache URL; `via` is `(host, port)` of an HTTP proxy to send the request
through (absolute-form request target), or None to connect to the cache-host itself. The
3-second budget of the old tool probe is split: at most CONNECT_S to open a connection (over
all the name's addresses, IPv6 and IPv4 in resolver order), the rest of BUDGET_S for the
answer's status line and headers. A connection that cannot be opened in a LAN-sized time means
the host is down for the breaker.

Outcomes: a 2xx status is a hit, 4xx/5xx a miss (what the old `curl -f` probe called them),
anything else (1xx, 3xx, an answer that is not HTTP) is "unreachable" without counting as
down; no connection, a reset or silence within the budget is "unreachable" and `down`.

Only `_socket` is imported (not `socket`, which pulls in `enum` and `selectors`): a few
milliseconds of start-up on every call.
"""

import _socket
import time

CONNECT_S = 1.0
BUDGET_S = 3.0
MAX_HEAD = 16384
ORIGIN_HEADERS = "x-withcache-origin-headers"


class Answer:
    """A probe's outcome: `kind` hit/miss/unreachable, `down` for the breaker, the
    origin headers the host says it serves (lower-cased), and `why` for the diagnostic."""

    __slots__ = ("down", "kind", "origin_headers", "why")

    def __init__(self, kind: str, down: bool = False, why: str = "") -> None:
        self.kind = kind
        self.down = down
        self.why = why
        self.origin_headers: frozenset[str] = frozenset()


def split_http_url(url: str) -> tuple[str, int, str, str] | None:
    """`http://host[:port]/path` -> (host, port, authority, path); None for anything this
    probe does not handle (another scheme, userinfo, a malformed port or host)."""
    head, sep, rest = url.partition("://")
    if not sep or head.lower() != "http":
        return None
    cut = len(rest)
    for stop in "/?#":
        at = rest.find(stop)
        if 0 <= at < cut:
            cut = at
    authority, path = rest[:cut], rest[cut:].partition("#")[0]
    if not path.startswith("/"):
        path = "/" + path
    if "@" in authority or not authority:
        return None
    host, port_text = authority, ""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return None
        host, after = authority[1:end], authority[end + 1 :]
        if after:
            if not after.startswith(":"):
                return None
            port_text = after[1:]
    elif ":" in authority:
        host, _, port_text = authority.rpartition(":")
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    else:
        port = 80
    if not host or not _plain_host(host):
        return None
    return host, port, authority, path


def _plain_host(host: str) -> bool:
    # What may appear in a Host header and a DNS lookup; no spaces or control bytes.
    return host.isascii() and all(c.isalnum() or c in "-._:%" for c in host)


def head(target: str, via: tuple[str, int] | None = None) -> Answer:
    parts = split_http_url(target)
    if parts is None:
        return Answer("unreachable", why="not a plain http:// URL")
    host, port, authority, path = parts
    started = time.monotonic()
    request_target = target.partition("#")[0] if via else path
    connect_host, connect_port = via or (host, port)
    sock, why = _connect(connect_host, connect_port, started + CONNECT_S)
    if sock is None:
        return Answer("unreachable", down=True, why=why)
    try:
        request = (
            f"HEAD {request_target} HTTP/1.1\r\nHost: {authority}\r\n"
            "User-Agent: withcache-shim\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        )
        return _exchange(sock, request.encode("ascii"), started + BUDGET_S)
    finally:
        sock.close()


def _connect(host: str, port: int, deadline: float):
    try:
        infos = _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return None, f"cannot resolve {host}: {exc}"
    why = "no address"
    for n, (family, kind, proto, _name, address) in enumerate(infos):
        left = deadline - time.monotonic()
        if left <= 0:
            return None, "connect timed out"
        # Later addresses keep a share of the time: one black-holed address must not eat it all.
        share = left / (len(infos) - n)
        sock = _socket.socket(family, kind, proto)
        sock.settimeout(share)
        try:
            sock.connect(address)
        except _socket.timeout:
            why = "connect timed out"
        except OSError as exc:
            why = f"cannot connect: {exc.strerror or exc}"
        else:
            return sock, ""
        sock.close()
    return None, why


def _exchange(sock, request: bytes, deadline: float) -> Answer:
    data = b""
    try:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.sendall(request)
        while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < MAX_HEAD:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _socket.timeout
            sock.settimeout(left)
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except _socket.timeout:
        return Answer("unreachable", down=True, why="no answer within the budget")
    except OSError as exc:
        if not data:
            return Answer("unreachable", down=True, why=f"connection failed: {exc}")
    return parse_head(data)


def parse_head(data: bytes) -> Answer:
    """Classify an answer's head (status line and headers)."""
    if not data:
        return Answer("unreachable", down=True, why="closed without an answer")
    head_end = data.find(b"\r\n\r\n")
    lines = data[: head_end if head_end >= 0 else len(data)].split(b"\n")
    status = lines[0].rstrip(b"\r").split(b" ", 2)
    if (
        len(status) < 2
        or status[0] not in (b"HTTP/1.0", b"HTTP/1.1")
        or len(status[1]) != 3
        or not status[1].isdigit()
    ):
        return Answer("unreachable", why="the answer is not HTTP")
    code = int(status[1])
    if 200 <= code < 300:
        answer = Answer("hit", why=f"HTTP {code}")
    elif 400 <= code < 600:
        return Answer("miss", why=f"HTTP {code}")
    else:
        return Answer("unreachable", why=f"HTTP {code} is neither a hit nor a miss")
    served: set[str] = set()
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == ORIGIN_HEADERS.encode():
            for item in value.split(b","):
                word = item.strip().lower().decode("latin-1")
                if word:
                    served.add(word)
    answer.origin_headers = frozenset(served)
    return answer
