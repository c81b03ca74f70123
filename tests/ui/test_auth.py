"""Unit tests of withcache.web.auth: cookies, CSRF tokens, the throttle, the session secret."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from withcache.web.auth import (
    ANON,
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


SECRET = b"k" * MIN_SECRET_BYTES


def follow(request: FakeRequest, secure: bool = False) -> FakeRequest:
    """The next request of the same browser: it sends back the cookie it was given."""
    return FakeRequest(secure, request.cookies_out[-1][1])


def test_cookie_is_secure_only_over_https():
    auth = Auth("pw", SECRET, Clock())
    plain, tls = FakeRequest(), FakeRequest(secure=True)
    auth.start(plain, USER)
    auth.start(tls, USER)
    assert plain.cookies_out[0][2]["secure"] is False
    assert tls.cookies_out[0][2]["secure"] is True
    for request in (plain, tls):
        kwargs = request.cookies_out[0][2]
        assert (kwargs["httpOnly"], kwargs["sameSite"]) == (True, "strict")
        assert kwargs["max_age"] == str(SESSION_SECONDS)


def test_a_session_expires_after_seven_days():
    clock = Clock()
    auth = Auth("pw", SECRET, clock)
    first = FakeRequest()
    auth.start(first, USER)
    clock.t += SESSION_SECONDS - 1
    assert auth.session(follow(first)).kind == USER
    clock.t += 2
    assert auth.session(follow(first)) is None


def test_a_cookie_signed_with_another_secret_is_ignored():
    first = FakeRequest()
    Auth("pw", b"1" * MIN_SECRET_BYTES, Clock()).start(first, USER)
    with pytest.raises(NotLoggedIn):
        Auth("pw", b"2" * MIN_SECRET_BYTES, Clock()).require(follow(first))


def test_an_anonymous_session_is_not_a_login():
    auth = Auth("pw", SECRET, Clock())
    first = FakeRequest()
    auth.start(first, ANON)
    with pytest.raises(NotLoggedIn):
        auth.require(follow(first))
    assert Auth(None, SECRET, Clock()).require(follow(first)).kind == ANON


def test_csrf_token_is_bound_to_the_session():
    auth = Auth("pw", SECRET, Clock())
    a, b = FakeRequest(), FakeRequest()
    token_a = auth.csrf_token(auth.start(a, USER))
    auth.start(b, USER)
    ok = follow(a)
    ok.args[b"csrf"] = [token_a.encode()]
    assert auth.check_csrf(ok).kind == USER
    by_header = follow(a)
    by_header.headers[b"X-CSRF-Token"] = token_a.encode()
    auth.check_csrf(by_header)
    stolen = follow(b)
    stolen.args[b"csrf"] = [token_a.encode()]
    with pytest.raises(CSRFRejected):
        auth.check_csrf(stolen)


def test_password_check():
    auth = Auth("secret", SECRET, Clock())
    assert auth.password_ok("secret")
    assert not auth.password_ok("secre")
    assert not auth.password_ok("")
    assert not Auth(None, SECRET, Clock()).password_ok("")


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
        Auth("pw", b"s" * (MIN_SECRET_BYTES - 1), Clock())


def test_weak_secret_a_cookie_expiring_beyond_the_session_lifetime_is_refused():
    """A signed expiry further out than now + lifetime is forged or from a clock that was wrong
    when it was issued; either way it is not honoured."""
    clock = Clock()
    auth = Auth("pw", SECRET, clock)
    first = FakeRequest()
    auth.start(first, USER)
    assert auth.session(follow(first)) is not None
    clock.t -= 3600  # the clock is set back an hour: the cookie now claims lifetime + 1 h
    assert auth.session(follow(first)) is None
