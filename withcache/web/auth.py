"""Operator authentication: password check, signed session cookie, CSRF tokens, login throttle.

Every admin visitor holds a session cookie, even before logging in (an "anon" session), so that
every state-changing request - the login form included - can carry a CSRF token derived from it.
Logging in replaces the cookie with a fresh "user" session (a new nonce, so a planted cookie is
worthless). The cookie is `<kind>.<expiry>.<nonce>.<hmac>`, signed with a key derived from the
session secret and the admin password, so a host restarted with another password refuses every
cookie issued before. A user session is also only good while the host holds it live (`Sessions`,
the catalog's sessions table): logging out ends it there, so a copy of the cookie is worthless
too. A restart with the same secret and password keeps operators logged in.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from withcache._log import make_logger

log = make_logger()

COOKIE = b"withcache_session"
SESSION_SECONDS = 7 * 24 * 3600
MIN_SECRET_BYTES = 32
SECRET_ENV = "WITHCACHE_SESSION_SECRET"
CSRF_FIELD = "csrf"
CSRF_HEADER = b"X-CSRF-Token"
ANON, USER = "anon", "user"


class NotLoggedIn(Exception):
    """An admin page or action was asked for without a logged-in session."""


class CSRFRejected(Exception):
    """A state-changing request without a valid CSRF token."""


class Throttled(Exception):
    """Too many failed logins from one client address; the value is the seconds to wait."""


_WHY = (
    f"a session secret must be at least {MIN_SECRET_BYTES} bytes, since a shorter one lets"
    " anyone who sees a cookie work it out and forge an operator login"
)


class WeakSecret(ValueError):
    """A session secret too short to sign cookies with; the message says where it came from and
    how to fix it."""


def load_secret(data_dir: str, environ: dict[str, str]) -> bytes:
    """WITHCACHE_SESSION_SECRET, else <data>/session-secret (made once, atomically, 0600).

    Raises WeakSecret for a secret shorter than MIN_SECRET_BYTES.
    """
    given = _environment_secret(environ)
    if given is not None:
        return given
    path = os.path.join(data_dir, "session-secret")
    found = _file_secret(path)
    if found is not None:
        return found
    # Written under a unique name, then linked into place: a concurrent start either wins the
    # link or reads the winner's secret, and nobody ever reads a half-written file.
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(base64.urlsafe_b64encode(secrets.token_bytes(32)) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another start won; use its secret
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
    made = _file_secret(path)
    assert made is not None
    return made


def check_secret(data_dir: str, environ: dict[str, str]) -> None:
    """Raise WeakSecret now for a secret load_secret would refuse (creating nothing), so a
    command line is refused before anything starts."""
    if _environment_secret(environ) is None:
        _file_secret(os.path.join(data_dir, "session-secret"))


def _environment_secret(environ: dict[str, str]) -> bytes | None:
    given = environ.get(SECRET_ENV)
    if not given:
        return None
    secret = given.encode("utf-8", "surrogateescape")  # as the environment decoded it
    if len(secret) < MIN_SECRET_BYTES:
        raise WeakSecret(
            f"{SECRET_ENV} is only {len(secret)} bytes; {_WHY}: set {SECRET_ENV} to a longer"
            " random value (e.g. the output of python3 -c 'import secrets;"
            " print(secrets.token_urlsafe(32))'), or unset it to have <data-dir>/session-secret"
            " generated and used"
        )
    return secret


def _file_secret(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except FileNotFoundError:
        return None
    if len(secret) < MIN_SECRET_BYTES:
        raise WeakSecret(
            f"the session secret file {path} holds only {len(secret)} bytes; {_WHY}: delete it"
            " to have a new one generated at the next start (every operator is logged out), or"
            " write a longer random value into it"
        )
    return secret


@dataclass(frozen=True)
class Session:
    kind: str
    expires: int
    nonce: str


@dataclass
class Throttle:
    """Failed logins per client address: after `limit` within `window` seconds, wait it out."""

    now: Callable[[], float]
    limit: int = 5
    window: float = 300.0
    _failures: dict[str, list[float]] = field(default_factory=dict)

    def check(self, client: str) -> None:
        recent = self._recent(client)
        if len(recent) >= self.limit:
            raise Throttled(int(recent[0] + self.window - self.now()) + 1)

    def failed(self, client: str) -> None:
        self._recent(client).append(self.now())
        if len(self._failures) > 10_000:
            # Bounded memory under a spray of addresses: forget those with nothing recent.
            for address in [a for a in self._failures if not self._recent(a)]:
                del self._failures[address]

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def _recent(self, client: str) -> list[float]:
        cutoff = self.now() - self.window
        kept = [t for t in self._failures.get(client, []) if t > cutoff]
        self._failures[client] = kept
        return kept


class Sessions(Protocol):
    """The logged-in sessions the host holds live, by session id (withcache.sessions keeps them
    in the catalog)."""

    def begin(self, session_id: str, expires: float, now: float) -> Awaitable[object]: ...

    def live(self, session_id: str, now: float) -> Awaitable[bool]: ...

    def end(self, session_id: str) -> Awaitable[object]: ...


class Auth:
    """The admin UI's gatekeeper; `password` None means the UI is open to anyone."""

    def __init__(
        self,
        password: str | None,
        secret: bytes,
        now: Callable[[], float],
        sessions: Sessions,
    ):
        if len(secret) < MIN_SECRET_BYTES:
            raise WeakSecret(_WHY)
        self.password = password or None
        # Bound to the password: a new password is a new key, and every older cookie (and CSRF
        # token) fails its signature check. The password is only ever hashed into the key.
        password_digest = _digest(self.password or "")
        self._key = hmac.new(secret, b"withcache session\0" + password_digest, "sha256").digest()
        self._now = now
        self._sessions = sessions
        self.throttle = Throttle(now)

    @property
    def enabled(self) -> bool:
        return self.password is not None

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def session(self, request) -> Session | None:
        """The session the request's cookie names, when its signature and expiry hold (whether
        a user session is still live is for `current` to say)."""
        raw = request.getCookie(COOKIE)
        if not raw:
            return None
        try:
            kind, expires, nonce, sig = raw.decode("ascii").split(".")
            deadline = int(expires)
        except (UnicodeDecodeError, ValueError):
            return None
        if not hmac.compare_digest(sig, self._sign(f"{kind}.{expires}.{nonce}")):
            return None
        now = self._now()
        # A signed expiry beyond one lifetime from now was never issued by this clock: forged
        # with a leaked key, or issued while the clock was wrong. Neither is honoured.
        if not now <= deadline <= now + SESSION_SECONDS or kind not in (ANON, USER):
            return None
        return Session(kind, deadline, nonce)

    async def current(self, request) -> Session | None:
        """The request's session, a user session only while the host holds it live."""
        session = self.session(request)
        if session is None or session.kind != USER:
            return session
        return session if await self._sessions.live(session.nonce, self._now()) else None

    def start_anonymous(self, request) -> Session:
        """A new anonymous session, set as the response's cookie."""
        return self._start(request, self._new(ANON))

    async def log_in(self, request) -> Session:
        """A new user session: held live by the host, then set as the response's cookie."""
        session = self._new(USER)
        await self._sessions.begin(session.nonce, session.expires, self._now())
        return self._start(request, session)

    async def log_out(self, request, session: Session) -> Session:
        """End a user session on the host; the response's cookie becomes a new anonymous one."""
        if session.kind == USER:
            await self._sessions.end(session.nonce)
        return self.start_anonymous(request)

    def _new(self, kind: str) -> Session:
        return Session(kind, int(self._now()) + SESSION_SECONDS, secrets.token_urlsafe(16))

    def _start(self, request, session: Session) -> Session:
        payload = f"{session.kind}.{session.expires}.{session.nonce}"
        request.addCookie(
            COOKIE,
            f"{payload}.{self._sign(payload)}".encode("ascii"),
            max_age=str(SESSION_SECONDS),
            path=b"/",
            secure=request.isSecure(),
            httpOnly=True,
            sameSite="strict",
        )
        return session

    async def ensure(self, request) -> Session:
        """The visitor's session, starting an anonymous one for a first visit."""
        return await self.current(request) or self.start_anonymous(request)

    def logged_in(self, session: Session | None) -> bool:
        if not self.enabled:
            return True
        return session is not None and session.kind == USER

    async def require(self, request) -> Session:
        """The session of a visitor allowed into the admin pages, else NotLoggedIn."""
        session = await self.ensure(request)
        if not self.logged_in(session):
            raise NotLoggedIn()
        return session

    def csrf_token(self, session: Session) -> str:
        return self._sign(f"csrf.{session.nonce}")

    def check_csrf(self, request, session: Session | None) -> Session:
        """The session of a POST carrying its CSRF token (form field or header), else 403."""
        raw = request.getHeader(CSRF_HEADER)
        if raw is None:
            values = request.args.get(CSRF_FIELD.encode())
            raw = values[0] if values else b""
        sent = raw.decode("latin-1") if isinstance(raw, bytes) else raw
        if session is None or not sent or not hmac.compare_digest(sent, self.csrf_token(session)):
            raise CSRFRejected()
        return session

    def password_ok(self, attempt: str) -> bool:
        # Digests first, so the comparison time says nothing about the password's length.
        return self.enabled and hmac.compare_digest(_digest(self.password or ""), _digest(attempt))


def _digest(password: str) -> bytes:
    # surrogateescape: the environment hands a password that is not UTF-8 over as surrogates.
    return hashlib.sha256(password.encode("utf-8", "surrogateescape")).digest()
