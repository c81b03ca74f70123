"""The host names the operator UI answers to (`--admin-host`), against DNS rebinding.

A page on evil.example can make its own name resolve to the cache-host's address; the browser
then sends the page's requests, with `Host: evil.example`, to the operator UI, and reads the
answers as evil.example's own. An open (password-less) UI would be the page's to drive. So the
UI answers only requests whose Host is one of this cache-host's names:

- any IP address literal (`10.0.0.5:3000`, `[::1]`): a browser sends one only for a URL that
  names the address itself, whose origin is then the cache-host's own, so it cannot come from
  a rebound name;
- `localhost`, this machine's host name and fully qualified name;
- the names (or globs, e.g. `*.lab.example`) given with `--admin-host`; `*` turns the check off
  (behind a reverse proxy that checks names itself).

A request without a Host header (HTTP/1.0) is answered: browsers always send one. The read path
(/b/, /blob, /healthz, /metrics) answers any Host: the shims and scripts use whatever name
they were given.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Iterable


def default_names() -> list[str]:
    """localhost and this machine's names."""
    return ["localhost", socket.gethostname(), socket.getfqdn()]


def _normal(name: str) -> str:
    return name.strip().lower().rstrip(".")


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_name(header: bytes) -> str | None:
    """The name (or address) in a Host header, without its port, brackets or trailing dot,
    in lower case; None when it is malformed."""
    try:
        value = header.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if value.startswith("["):
        address, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest[1:].isdigit()) or (rest and rest[0] != ":"):
            return None
        return address.lower() if _is_ip_literal(address) and ":" in address else None
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    name = _normal(name)
    return name or None


class AdminHosts:
    """Decides whether the operator UI answers a request, by its Host header."""

    def __init__(self, names: Iterable[str]):
        self.patterns = tuple(sorted({_normal(n) for n in names if _normal(n)}))
        self.any = "*" in self.patterns

    def allows(self, header: bytes | None) -> bool:
        if header is None or self.any:
            return True
        name = host_name(header)
        if name is None:
            return False
        if _is_ip_literal(name):
            return True
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.patterns)
