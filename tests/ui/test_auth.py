"""Unit tests of withcache.web.auth: cookies, CSRF tokens, the throttle, the session secret;
and the login/logout routes in-process (klein's resource under treq's StubTreq)."""

from __future__ import annotations

import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from urllib.parse import urlencode

import pytest
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.python.failure import Failure

from withcache.web.admin import AdminUI
from withcache.web.auth import (
    COOKIE,
    MIN_SECRET_BYTES,
    SESSION_SECONDS,
    USER,
    Auth,
    CSRFRejected,
    NotLoggedIn,
    Throttle,
    Throttled,
    load_secret,
)


class FakeRequest:
    """Just what Auth touches of a twisted.web request."""

    def __init__(self, secure: bool = False, cookie: bytes | None = None):
        self.secure = secure
        self.cookies_in = {COOKIE: cookie} if cookie else {}
        self.cookies_out: list[tuple[bytes, bytes, dict]] = []
        self.headers: dict[bytes, bytes] = {}
        self.args: dict[bytes, list[bytes]] = {}

    def isSecure(self):
        return self.secure

    def getCookie(self, name):
        return self.cookies_in.get(name)

    def addCookie(self, name, value, **kwargs):
        self.cookies_out.append((name, value, kwargs))

    def getHeader(self, name):
        return self.headers.get(name)


class Clock:
    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self):
        return self.t


class MemorySessions:
    """withcache.web.auth.Sessions in a dict (the host's is the catalog's sessions table); each
    call answers at once."""

    def __init__(self):
        self.expires: dict[str, float] = {}

    async def begin(self, session_id, expires, now):
        self.expires[session_id] = expires

    async def live(self, session_id, now):
        return self.expires.get(session_id, 0) > now

    async def end(self, session_id):
        self.expires.pop(session_id, None)


def done(awaitable):
    """The result of a coroutine that never waits (MemorySessions answers at once)."""
    results = []
    defer.ensureDeferred(awaitable).addBoth(results.append)
    (result,) = results
    if isinstance(result, Failure):
        result.raiseException()
    return result


SECRET = b"k" * MIN_SECRET_BYTES


def make_auth(password="pw", secret=SECRET, clock=None, sessions=None) -> Auth:
    return Auth(password, secret, clock or Clock(), sessions or MemorySessions())


def follow(request: FakeRequest, secure: bool = False) -> FakeRequest:
    """The next request of the same browser: it sends back the cookie it was given."""
    return FakeRequest(secure, request.cookies_out[-1][1])


def test_cookie_is_secure_only_over_https():
    auth = make_auth()
    plain, tls = FakeRequest(), FakeRequest(secure=True)
    done(auth.log_in(plain))
    auth.start_anonymous(tls)
    assert plain.cookies_out[0][2]["secure"] is False
    assert tls.cookies_out[0][2]["secure"] is True
    for request in (plain, tls):
        kwargs = request.cookies_out[0][2]
        assert (kwargs["httpOnly"], kwargs["sameSite"]) == (True, "strict")
        assert kwargs["max_age"] == str(SESSION_SECONDS)


def test_a_session_expires_after_seven_days():
    clock = Clock()
    auth = make_auth(clock=clock)
    first = FakeRequest()
    done(auth.log_in(first))
    clock.t += SESSION_SECONDS - 1
    assert done(auth.current(follow(first))).kind == USER
    clock.t += 2
    assert auth.session(follow(first)) is None
    assert done(auth.current(follow(first))) is None


def test_a_cookie_signed_with_another_secret_is_ignored():
    first, sessions = FakeRequest(), MemorySessions()
    done(make_auth(secret=b"1" * MIN_SECRET_BYTES, sessions=sessions).log_in(first))
    with pytest.raises(NotLoggedIn):
        done(make_auth(secret=b"2" * MIN_SECRET_BYTES, sessions=sessions).require(follow(first)))


def test_an_anonymous_session_is_not_a_login():
    auth = make_auth()
    first = FakeRequest()
    auth.start_anonymous(first)
    with pytest.raises(NotLoggedIn):
        done(auth.require(follow(first)))
    assert done(make_auth(password=None).require(follow(first))).kind != USER


def test_csrf_token_is_bound_to_the_session():
    auth = make_auth()
    a, b = FakeRequest(), FakeRequest()
    token_a = auth.csrf_token(done(auth.log_in(a)))
    done(auth.log_in(b))
    ok = follow(a)
    ok.args[b"csrf"] = [token_a.encode()]
    assert auth.check_csrf(ok, done(auth.current(ok))).kind == USER
    by_header = follow(a)
    by_header.headers[b"X-CSRF-Token"] = token_a.encode()
    auth.check_csrf(by_header, done(auth.current(by_header)))
    stolen = follow(b)
    stolen.args[b"csrf"] = [token_a.encode()]
    with pytest.raises(CSRFRejected):
        auth.check_csrf(stolen, done(auth.current(stolen)))
    with pytest.raises(CSRFRejected):
        auth.check_csrf(ok, None)


def test_password_check():
    auth = make_auth(password="secret")
    assert auth.password_ok("secret")
    assert not auth.password_ok("secre")
    assert not auth.password_ok("")
    assert not make_auth(password=None).password_ok("")


def test_throttle_locks_out_one_address_for_the_window():
    clock = Clock()
    throttle = Throttle(clock, limit=3, window=60)
    for _ in range(3):
        throttle.check("10.0.0.1")
        throttle.failed("10.0.0.1")
    with pytest.raises(Throttled):
        throttle.check("10.0.0.1")
    throttle.check("10.0.0.2")  # another address is not affected
    clock.t += 61
    throttle.check("10.0.0.1")


def test_session_secret_file_is_made_once_with_mode_0600(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: load_secret(str(tmp_path), {}), range(16)))
    assert len(secrets) == 1
    path = tmp_path / "session-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["session-secret"]  # no temporary files left


def test_session_secret_from_the_environment_wins(tmp_path):
    given = "an operator-chosen secret of 40 bytes..."
    assert load_secret(str(tmp_path), {"WITHCACHE_SESSION_SECRET": given}) == given.encode()
    assert not (tmp_path / "session-secret").exists()


# -- issue 13, finding 7: weak session secrets ---------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"\n", b"ab\n", b"x" * (MIN_SECRET_BYTES - 1)])
def test_weak_secret_file_is_refused_naming_the_file_and_the_fix(tmp_path, content):
    """An empty session-secret file signed cookies with an empty key: anyone could forge one."""
    path = tmp_path / "session-secret"
    path.write_bytes(content)
    with pytest.raises(ValueError) as refused:
        load_secret(str(tmp_path), {})
    message = str(refused.value)
    assert str(path) in message and "delete it" in message
    assert f"at least {MIN_SECRET_BYTES} bytes" in message
    assert path.read_bytes() == content  # left for the operator to look at


@pytest.mark.parametrize("given", ["ab", "x" * (MIN_SECRET_BYTES - 1)])
def test_weak_secret_from_the_environment_is_refused_naming_the_variable(tmp_path, given):
    """A 2-byte secret is brute-forced offline from any anonymous cookie in milliseconds."""
    with pytest.raises(ValueError) as refused:
        load_secret(str(tmp_path), {"WITHCACHE_SESSION_SECRET": given})
    message = str(refused.value)
    assert "WITHCACHE_SESSION_SECRET" in message
    assert f"at least {MIN_SECRET_BYTES} bytes" in message


def test_weak_secret_is_refused_by_auth_itself():
    with pytest.raises(ValueError):
        make_auth(secret=b"s" * (MIN_SECRET_BYTES - 1))


def test_weak_secret_a_cookie_expiring_beyond_the_session_lifetime_is_refused():
    """A signed expiry further out than now + lifetime is forged or from a clock that was wrong
    when it was issued; either way it is not honoured."""
    clock = Clock()
    auth = make_auth(clock=clock)
    first = FakeRequest()
    done(auth.log_in(first))
    assert auth.session(follow(first)) is not None
    clock.t -= 3600  # the clock is set back an hour: the cookie now claims lifetime + 1 h
    assert auth.session(follow(first)) is None


# -- issue 13, finding 8: sessions outlive logout and password changes ---------------------------


def test_password_change_ends_every_session():
    """The cookie is signed with a key bound to the password: a host restarted with another
    password (the same secret, the same sessions table) refuses the cookies issued before."""
    clock, sessions = Clock(), MemorySessions()
    first = FakeRequest()
    done(make_auth("old password", clock=clock, sessions=sessions).log_in(first))
    restarted = make_auth("old password", clock=clock, sessions=sessions)
    assert done(restarted.current(follow(first))).kind == USER
    changed = make_auth("new password", clock=clock, sessions=sessions)
    assert changed.session(follow(first)) is None
    with pytest.raises(NotLoggedIn):
        done(changed.require(follow(first)))


def test_logout_ends_the_session_on_the_host():
    """A copy of the cookie taken before the logout is refused after it."""
    auth = make_auth()
    first = FakeRequest()
    session = done(auth.log_in(first))
    copy = follow(first)
    done(auth.log_out(follow(first), session))
    assert auth.session(copy) is not None  # its signature still holds ...
    assert done(auth.current(copy)) is None  # ... but the host no longer holds it live
    with pytest.raises(NotLoggedIn):
        done(auth.require(copy))


class Browser:
    """Requests to the operator UI's Klein resource in-process (no socket), each carrying only
    the session cookie this browser holds."""

    def __init__(self, resource, cookie: str | None = None):
        self.resource = resource
        self.cookie = cookie
        self.csrf = ""

    def request(self, method: str, path: str, fields: dict | None = None):
        stub = StubTreq(self.resource)  # a fresh one: no cookie jar carried between requests
        headers = {"Cookie": f"{COOKIE.decode()}={self.cookie}"} if self.cookie else {}
        if fields is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = urlencode(fields).encode() if fields is not None else None
        answer = stub.request(
            method, "http://admin.test" + path, headers=headers, data=body, allow_redirects=False
        )
        stub.flush()
        response = done(answer)
        content = response.content()
        stub.flush()
        text = done(content).decode()
        for set_cookie in response.headers.getRawHeaders("Set-Cookie", []):
            name, value = set_cookie.split(";", 1)[0].split("=", 1)
            if name == COOKIE.decode():
                self.cookie = value
        if found := re.search(r'name="csrf" value="([0-9a-f]+)"', text):
            self.csrf = found.group(1)
        location = response.headers.getRawHeaders("Location", [""])[0]
        return response.code, location

    def log_in(self, password: str) -> int:
        self.request("GET", "/login")
        code, _ = self.request("POST", "/login", {"password": password, "csrf": self.csrf})
        return code


def admin_resource(auth: Auth):
    # What the pages below read, and an audit log that keeps (actor, action) in `recorded`.
    recorded: list[tuple[str, str]] = []
    events = SimpleNamespace(
        record=lambda actor, action, *rest: recorded.append((actor.name, action))
    )
    cache = SimpleNamespace(settings=SimpleNamespace(curate=False), events=events)
    resource = AdminUI(cache, auth).app.resource()
    resource.recorded = recorded
    return resource


ADMIN_PAGE = "/admin/artifacts/delete?key=x"  # a page behind the login that reads no catalog


def test_logout_a_replayed_cookie_is_refused_by_the_routes():
    resource = admin_resource(make_auth("correct horse"))
    operator = Browser(resource)
    assert operator.log_in("correct horse") == 303
    assert operator.request("GET", ADMIN_PAGE) == (200, "")
    cookie, token = operator.cookie, operator.csrf
    assert operator.request("POST", "/logout", {"csrf": token}) == (303, "/login")
    assert operator.request("GET", ADMIN_PAGE) == (303, "/login")

    def replayed():  # a browser holding a copy of the cookie taken before the logout
        return Browser(resource, cookie)

    assert replayed().request("GET", ADMIN_PAGE) == (303, "/login")
    assert replayed().request("POST", "/admin/jobs/clear", {"csrf": token}) == (303, "/login")
    # A second tab logging the ended session out again lands on the login page.
    assert replayed().request("POST", "/logout", {"csrf": token}) == (303, "/login")
    # The audit log has the login and the one logout that ended the session.
    assert resource.recorded == [("operator", "login.succeeded"), ("operator", "logout")]


def test_password_change_the_routes_refuse_a_cookie_of_the_old_password():
    sessions = MemorySessions()
    operator = Browser(admin_resource(make_auth("old password", sessions=sessions)))
    assert operator.log_in("old password") == 303
    same = Browser(admin_resource(make_auth("old password", sessions=sessions)), operator.cookie)
    assert same.request("GET", ADMIN_PAGE) == (200, "")
    changed = admin_resource(make_auth("new password", sessions=sessions))
    assert Browser(changed, operator.cookie).request("GET", ADMIN_PAGE) == (303, "/login")
    assert Browser(changed).log_in("new password") == 303
