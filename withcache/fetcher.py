"""One origin fill: stream into a store ingest, resume with Range, retry, time out.

The connections come from withcache.origin_client (policy-checked, raw bytes); this module
decides what each answer means for the fill: resume or start over, retry or give up, and when a
body is complete.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast
from urllib.parse import urljoin, urlsplit

from twisted.internet import defer, error, protocol, task
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers

import withcache
from withcache import freshness
from withcache._log import make_logger
from withcache.freshness import NotCacheable
from withcache.logs import redact_url
from withcache.origin_client import FetchError, how_it_ended, is_address
from withcache.policy import OriginPolicy, RefusedOrigin
from withcache.sanitise import ERROR_TEXT, printable

__all__ = ["FetchError", "FetchResult", "Fetcher", "NotCacheable", "Revalidation"]

log = make_logger()

USER_AGENT = f"withcache/{withcache.__version__}".encode()
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CONTENT_RANGE = re.compile(rb"\Abytes (\d+)-(\d+)/(\d+|\*)\Z")

Credentials = Callable[[str], "tuple[str, str] | None"]
Progress = Callable[[int, "int | None"], None]
# Called once per attempt whose response is usable (200, or 206 resuming), before any of its
# body is written: (length or None, Content-Type or None, the response's headers). Raising
# refuses the response for good.
OnHeaders = Callable[["int | None", "str | None", Headers], None]


class Sink(Protocol):
    """Where a fill's bytes go: a store Ingest, or a ThreadedWriter in front of one."""

    size: int

    def write(self, data: bytes) -> None: ...

    def truncate(self) -> None: ...


class _Transient(Exception):
    """A failure worth another attempt (5xx, 429, a dropped or silent connection)."""

    def __init__(self, message: str, delay: float | None = None):
        super().__init__(message)
        self.delay = delay


@dataclass(frozen=True)
class FetchResult:
    url: str
    size: int
    content_type: str | None
    # The origin's freshness.KEPT headers of the answer the body came from.
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Revalidation:
    """A conditional request's answer: 304 (not_modified, with its KEPT headers) or a 200
    (changed: its body was not read)."""

    not_modified: bool
    headers: dict[str, str]


class _BodySink(protocol.Protocol):
    """Receives a body chunk by chunk; gives up when the origin goes quiet for too long.

    treq.collect cannot time out a body that simply stops arriving, so this is its twin with an
    idle timer that is reset on every chunk and drops the connection when it fires.

    While the disk is behind, the connection is paused and the idle timer is off. Chunks still
    arrive after the pause (one socket read holds several TLS records or chunks of a chunked
    body, and the parser hands them over one by one), so pausing and resuming are idempotent and
    the timer is only touched while not paused.
    """

    def __init__(
        self,
        write: Callable[[bytes], None],
        clock,
        idle_timeout: float,
        throttle: Callable[[], defer.Deferred | None] | None = None,
    ):
        self.done: defer.Deferred[None] = defer.Deferred(canceller=lambda _: self._abort())
        self._write, self._clock, self._idle = write, clock, idle_timeout
        self._throttle = throttle
        self._timer = None
        self._paused = False

    def connectionMade(self):
        self._start_timer()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        if not self._paused:
            self._start_timer()
        try:
            self._write(data)
        except BaseException as e:
            self._fail(e)
            return
        if self._paused or self._throttle is None:
            return
        wait = self._throttle()
        if wait is not None:
            # The disk is behind: stop reading (and the idle clock) until it catches up.
            self._paused = True
            self._stop_timer()
            cast(Any, self.transport).pauseProducing()
            wait.addCallback(self._resume)

    def _resume(self, _):
        if not self._paused:
            return
        self._paused = False
        if not self.done.called:
            self._start_timer()
            cast(Any, self.transport).resumeProducing()

    def _start_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._idle)
        else:
            self._timer = self._clock.callLater(self._idle, self._timed_out)

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def connectionLost(self, reason=protocol.connectionDone):
        self._stop_timer()
        if self.done.called:
            return
        if reason.check(http.PotentialDataLoss):
            # A body of unknown length: complete only if the connection closed cleanly.
            cleanly, why = how_it_ended()
            if cleanly:
                self.done.callback(None)
            else:
                message = f"connection lost before the end of a body of unknown length ({why})"
                self.done.errback(_Transient(message))
        elif reason.check(ResponseDone):
            self.done.callback(None)
        else:
            self.done.errback(reason)

    def _timed_out(self) -> None:
        self._fail(_Transient(f"no data from the origin for {self._idle:g} s"))

    def _fail(self, exc: BaseException) -> None:
        self._abort()
        if not self.done.called:
            self.done.errback(exc)

    def _abort(self) -> None:
        self._stop_timer()
        if self.transport is not None:
            self.transport.stopProducing()


def _was_cancelled(exc: BaseException) -> bool:
    reasons = getattr(exc, "reasons", None) or []
    return any(r.check(defer.CancelledError) for r in reasons)


def describe(exc: BaseException) -> str:
    """One line for the operator about why an attempt failed; printable, as it may quote what
    the origin sent."""
    if isinstance(exc, ResponseFailed | ResponseNeverReceived):
        reasons = [r.value for r in exc.reasons]
        inner = "; ".join(type(r).__name__ + (f": {r}" if str(r) else "") for r in reasons)
        text = f"connection lost ({inner})"
    elif isinstance(exc, defer.TimeoutError):
        text = "timed out waiting for the origin's response headers"
    elif isinstance(exc, error.ConnectError | error.TimeoutError):
        text = f"cannot connect: {exc}"
    else:
        text = str(exc) or type(exc).__name__
    return printable(text, ERROR_TEXT)


class Fetcher:
    """Fetches one URL into an ingest; all timing comes from the reactor passed in."""

    def __init__(
        self,
        reactor,
        http_client: Any,
        policy: OriginPolicy,
        *,
        credentials: Credentials | None = None,
        credentials_over_http: bool = False,
        idle_timeout: float = 60.0,
        header_timeout: float = 60.0,
        max_attempts: int = 5,
        max_redirects: int = 10,
        backoff: float = 1.0,
        freshness_policy: freshness.Policy | None = None,
    ):
        self.reactor, self.http, self.policy = reactor, http_client, policy
        self.credentials = credentials or (lambda host: None)
        self.credentials_over_http = credentials_over_http
        self.idle_timeout, self.header_timeout = idle_timeout, header_timeout
        self.max_attempts, self.max_redirects, self.backoff = max_attempts, max_redirects, backoff
        # None: store whatever the origin answers (withcache-admin's fetching tools).
        self.freshness = freshness_policy

    async def fetch(
        self, url: str, ingest: Sink, progress: Progress, on_headers: OnHeaders | None = None
    ) -> FetchResult:
        """Fill ingest with the bytes of url; raises FetchError or RefusedOrigin for good.
        on_headers hears of each usable response (see OnHeaders)."""
        state: dict[str, Any] = {"validator": None}
        # Only attempts that got no further than any before them count against max_attempts: a
        # big fill over a flaky link may drop many times, and each drop that advanced the file
        # starts the count (and the backoff) over.
        furthest, attempt, fruitless = ingest.size, 0, 0
        while True:
            attempt += 1
            try:
                return await self._attempt(url, ingest, progress, state, on_headers)
            except (FetchError, RefusedOrigin, NotCacheable, defer.CancelledError):
                raise
            except (_Transient, ResponseFailed, ResponseNeverReceived, defer.TimeoutError,
                    error.ConnectError, error.TimeoutError, ConnectionError) as e:  # fmt: skip
                if _was_cancelled(e):
                    # A cancel that landed before the response: the agent wraps it.
                    raise defer.CancelledError() from e
                reason = describe(e)
                if ingest.size > furthest:
                    furthest, fruitless = ingest.size, 0
                fruitless += 1
                if fruitless >= self.max_attempts:
                    raise FetchError(
                        f"gave up after {fruitless} attempts without progress: {reason}"
                    ) from None
                delay = getattr(e, "delay", None)
                if delay is None:
                    delay = min(self.backoff * 2 ** (fruitless - 1), 30.0)
                log.info(
                    "fill of {url} attempt {attempt} failed ({reason}); next in {delay:.1f}s"
                    " from byte {offset}",
                    url=redact_url(url),
                    attempt=attempt,
                    reason=reason,
                    delay=delay,
                    offset=ingest.size,
                )
                await task.deferLater(self.reactor, delay, lambda: None)

    async def _attempt(
        self, url, ingest: Sink, progress: Progress, state, on_headers: OnHeaders | None
    ) -> FetchResult:
        offset = ingest.size
        extra = {}
        if offset:
            extra[b"range"] = f"bytes={offset}-".encode()
            if state["validator"]:
                extra[b"if-range"] = state["validator"]
        response, final_url, authed = await self._get(url, extra)
        code = response.code
        total = None
        if code == 200:
            kept = freshness.keep(_lower_headers(response))
            self._check_storable(url, kept, authed, response)
            if offset:
                # The origin ignored Range (or If-Range told it the file changed): start over.
                ingest.truncate()
            total = response.length if isinstance(response.length, int) else None
            state["validator"] = _validator(response)
            state["headers"] = kept
        elif code == 206 and offset:
            first, total = _content_range(response)
            if first != offset or _validator(response) != state["validator"]:
                _discard(response)
                ingest.truncate()
                state["validator"] = None
                raise _Transient("the origin's file changed during the fill; restarting")
        elif code == 416 and offset:
            _discard(response)
            ingest.truncate()
            raise _Transient("the origin refused to resume; restarting")
        elif code == 429 or code >= 500:
            _discard(response)
            raise _Transient(f"origin answered {code} {_phrase(response)}", _retry_after(response))
        else:
            _discard(response)
            raise FetchError(f"origin answered {code} {_phrase(response)}")
        if total is not None:
            self.policy.check_size(total)
        raw_type = response.headers.getRawHeaders(b"content-type", [None])[0]
        content_type = raw_type.decode("latin-1") if raw_type else None
        if on_headers is not None:
            # The one point where a fill's origin response is in and no body byte written yet.
            try:
                on_headers(total, content_type, response.headers)
            except BaseException:
                _discard(response)
                raise
        progress(ingest.size, total)

        def write(data: bytes) -> None:
            ingest.write(data)
            if self.policy.max_size and ingest.size > self.policy.max_size:
                raise RefusedOrigin(
                    f"refused: more than --max-size {self.policy.max_size} bytes from the origin"
                )
            progress(ingest.size, total)

        sink = _BodySink(write, self.reactor, self.idle_timeout, getattr(ingest, "throttle", None))
        response.deliverBody(sink)
        await sink.done
        if total is not None and ingest.size != total:
            raise _Transient(f"connection closed after {ingest.size} of {total} bytes")
        return FetchResult(final_url, ingest.size, content_type, state.get("headers") or {})

    def _check_storable(self, url: str, kept: dict[str, str], authed: bool, response) -> None:
        """Raise NotCacheable (without reading the body) if the answer may not be stored."""
        if self.freshness is None:
            return
        refused = freshness.refusal(
            kept, credentials_used=authed, rule=self.freshness.rule_for(url)
        )
        if refused is not None:
            _discard(response)
            raise refused

    async def revalidate(self, url: str, headers: dict[str, str]) -> Revalidation:
        """Ask the origin whether the bytes stored with `headers` (their validators) are still
        current: one conditional GET, no retries, no body read. Raises what a fill attempt
        raises (FetchError for an answer other than 200 or 304)."""
        extra = {}
        if "etag" in headers:
            extra[b"if-none-match"] = headers["etag"].encode("latin-1", "replace")
        if "last-modified" in headers:
            extra[b"if-modified-since"] = headers["last-modified"].encode("latin-1", "replace")
        response, _, _ = await self._get(url, extra)
        kept = freshness.keep(_lower_headers(response))
        if response.code == 304:
            _discard(response)
            return Revalidation(True, kept)
        if response.code == 200:
            _discard(response)
            return Revalidation(False, kept)
        _discard(response)
        raise FetchError(f"origin answered {response.code} {_phrase(response)}")

    async def _get(self, url: str, extra: dict[bytes, bytes]):
        """GET url following up to max_redirects redirects; credentials only for each hop's host,
        and only over https unless credentials_over_http."""
        for _hop in range(self.max_redirects + 1):
            parts = urlsplit(url)
            self.policy.check_scheme(parts.scheme)
            host = parts.hostname or ""
            if is_address(host):
                # Refused before treq sees it (its URL handling cannot encode IPv6 literals).
                self.policy.check_address(host, host)
            headers = {b"user-agent": [USER_AGENT], **{k: [v] for k, v in extra.items()}}
            # A password in the clear is anyone's on the path: netrc entries go over https
            # only, unless the operator opted in for an internal mirror.
            secure = parts.scheme == "https" or self.credentials_over_http
            auth = self.credentials(host) if secure else None
            try:
                d = self.http.get(
                    url,
                    headers=headers,
                    auth=auth,
                    allow_redirects=False,
                    unbuffered=True,
                    reactor=self.reactor,
                )
            except ValueError as e:  # idna and hyperlink errors are ValueErrors
                # url may be a redirect's Location: whatever the origin put there.
                raise FetchError(printable(f"cannot request {redact_url(url)}: {e}")) from None
            response = await d.addTimeout(
                self.header_timeout, self.reactor, onTimeoutCancel=_headers_timed_out
            )
            location = response.headers.getRawHeaders(b"location", [None])[0]
            if response.code not in REDIRECTS or not location:
                return response, url, auth is not None
            _discard(response)
            url = urljoin(url, location.decode("latin-1"))
        raise FetchError(f"more than {self.max_redirects} redirects")


def _headers_timed_out(result, timeout: float):
    """Our own timeout, not a cancel: the agent wraps the CancelledError it causes in
    ResponseNeverReceived, which Deferred.addTimeout would pass on as it is, and the fill would
    then end "cancelled" instead of being retried."""
    if isinstance(result, Failure):
        raise defer.TimeoutError(f"no response headers within {timeout:g} s")
    return result


def _lower_headers(response) -> dict[str, list[str]]:
    """A response's headers by lower-case name, values decoded as latin-1 (any bytes)."""
    return {
        name.decode("latin-1").lower(): [v.decode("latin-1") for v in values]
        for name, values in response.headers.getAllRawHeaders()
    }


def _validator(response) -> bytes | None:
    etag = response.headers.getRawHeaders(b"etag", [None])[0]
    if etag and not etag.startswith(b"W/"):
        return etag
    return response.headers.getRawHeaders(b"last-modified", [None])[0]


def _content_range(response) -> tuple[int, int | None]:
    value = response.headers.getRawHeaders(b"content-range", [b""])[0]
    m = _CONTENT_RANGE.match(value.strip())
    if not m:
        raise _Transient(f"unusable Content-Range {value!r}")
    total = None if m.group(3) == b"*" else int(m.group(3))
    return int(m.group(1)), total


def _retry_after(response) -> float | None:
    value = response.headers.getRawHeaders(b"retry-after", [None])[0]
    if value and value.strip().isdigit():
        return min(float(value), 60.0)
    return None


def _phrase(response) -> str:
    """The reason phrase of the status line, as the origin sent it: any bytes but CR and LF."""
    return printable((response.phrase or b"").decode("latin-1"), 100)


def _discard(response) -> None:
    """Drop a body nobody wants without reading it (a redirect's or an error page's)."""
    response.deliverBody(_Discard())


class _Discard(protocol.Protocol):
    def connectionMade(self):
        self.transport.stopProducing()
