"""Which origins a fill may reach: schemes, an optional host allow-list, public addresses only.

The address check runs on the address actually connected to (see withcache.fetcher's endpoint
factory), after resolution and on every redirect hop, so a name that resolves to the lab's own
network, DNS rebinding and a redirect to 127.0.0.1 are all refused. `--allow-private` is for labs
whose origins are internal mirrors.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from withcache.keys import CACHEABLE_SCHEMES

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class RefusedOrigin(Exception):
    """A fill the policy does not allow; the message is for the operator."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def public_address(address: str) -> bool:
    """True when address is a globally routable unicast address (and so is any IPv4 inside it)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            # A mapped address is a way of writing the IPv4 one; judge that.
            return public_address(str(ip.ipv4_mapped))
        inner = _embedded_ipv4(ip)
        if inner is not None and not public_address(str(inner)):
            return False
        if ip.is_site_local:
            # fec0::/10, deprecated site-local (RFC 3879): private in practice, yet neither
            # private nor reserved to ipaddress, so is_global calls it public.
            return False
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_link_local:
        return False
    if ip.is_private or ip.is_reserved or ip in _CGNAT:
        return False
    return ip.is_global


@dataclass(frozen=True)
class OriginPolicy:
    allow_private: bool = False
    allow_hosts: tuple[str, ...] = field(default_factory=tuple)
    max_size: int = 0

    @classmethod
    def of(cls, allow_private: bool, allow_hosts: Iterable[str], max_size: int) -> OriginPolicy:
        return cls(allow_private, tuple(h.lower() for h in allow_hosts), max_size)

    def auto_fetch_allowed(self, host: str) -> bool:
        """Whether a miss for this host may start a fill by itself (operator adds may anyway)."""
        if not self.allow_hosts:
            return True
        return any(fnmatch.fnmatchcase(host.lower(), glob) for glob in self.allow_hosts)

    def check_scheme(self, scheme: str) -> None:
        if scheme.lower() not in CACHEABLE_SCHEMES:
            raise RefusedOrigin(f"refused: only http and https origins, not {scheme!r}")

    def check_address(self, host: str, address: str) -> None:
        """Raise RefusedOrigin unless a fill may connect to address (which host resolved to)."""
        if self.allow_private or self.address_allowed(host, address):
            return
        shown = host if host == address else f"{host} ({address})"
        raise RefusedOrigin(
            f"refused: {shown} is not a public address (start the host with --allow-private "
            "to fetch from internal mirrors)"
        )

    def allowed(self, host: str, addresses: Iterable[str]) -> list[str]:
        """Those of the addresses host resolved to that a fill may connect to, in order; when
        there were some and none is allowed, RefusedOrigin for the first."""
        allowed, refusal = [], None
        for address in addresses:
            try:
                self.check_address(host, address)
            except RefusedOrigin as e:
                refusal = refusal or e
                continue
            allowed.append(address)
        if refusal is not None and not allowed:
            raise refusal
        return allowed

    def address_allowed(self, host: str, address: str) -> bool:
        return public_address(address)

    def check_size(self, size: int) -> None:
        if self.max_size and size > self.max_size:
            raise RefusedOrigin(f"refused: {size} bytes is over --max-size {self.max_size}")
