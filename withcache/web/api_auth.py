"""Who is calling the API, and may they: a bearer token with scopes, or the operator's session.

`Authorization: Bearer wct_…` is checked against the catalog (withcache.tokens). Without one, a
logged-in operator session may use the API as it uses the UI: with every scope, from a Host
that is one of this cache-host's names (against DNS rebinding), and with its CSRF token in an
`X-CSRF-Token` header on anything that changes state. A request with neither is 401 with
`WWW-Authenticate: Bearer`; a token without the scope is 403. The token is never logged, and
never accepted from the query string (which proxies and browsers keep).
"""

from __future__ import annotations

from dataclasses import dataclass

from withcache import tokens
from withcache.cache import Cache
from withcache.events import OPERATOR, Actor, token_actor
from withcache.web.auth import Auth, CSRFRejected
from withcache.web.hosts import AdminHosts
from withcache.web.problems import Problem

SAFE_METHODS = (b"GET", b"HEAD")
CHALLENGE = b'Bearer realm="withcache"'


@dataclass(frozen=True)
class Caller:
    actor: Actor
    scopes: tuple[str, ...]
    token: tokens.Token | None = None


def client_of(request) -> str | None:
    return getattr(request.getClientAddress(), "host", None)


def _challenge(error: str | None = None) -> tuple[tuple[bytes, bytes], ...]:
    value = CHALLENGE + (f', error="{error}"'.encode() if error else b"")
    return ((b"WWW-Authenticate", value),)


class APIAuth:
    def __init__(self, cache: Cache, auth: Auth, admin_hosts: AdminHosts):
        self._cache = cache
        self._auth = auth
        self._hosts = admin_hosts

    async def caller(self, request, scope: str) -> Caller:
        """The caller of this request if it may do what `scope` covers; else a Problem."""
        found = await self._identify(request)
        if not tokens.allows(found.scopes, scope):
            raise Problem("insufficient-scope", f"this needs the {scope!r} scope")
        return found

    async def _identify(self, request) -> Caller:
        raw = request.getHeader(b"Authorization")
        if raw is not None:
            header = raw.decode("latin-1") if isinstance(raw, bytes) else raw
            scheme, _, presented = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not presented.strip():
                raise Problem("unauthorized", "use Authorization: Bearer <token>", _challenge())
            token = await self._cache.check_token(presented.strip())
            if token is None:
                raise Problem(
                    "unauthorized", "unknown or revoked token", _challenge("invalid_token")
                )
            return Caller(token_actor(token.name, client_of(request)), token.scopes, token)
        session = await self._auth.current(request)
        if (
            session is None
            or not self._auth.logged_in(session)
            or not self._hosts.allows(request.getHeader(b"host"))
        ):
            raise Problem("unauthorized", "no bearer token and no operator session", _challenge())
        if request.method not in SAFE_METHODS:
            try:
                self._auth.check_csrf(request, session)
            except CSRFRejected:
                raise Problem("csrf-rejected") from None
        return Caller(Actor(OPERATOR, client_of(request)), tokens.SCOPES)
