"""A serving worker's pieces in memory (the worker end to end is in test_processes.py)."""

from __future__ import annotations

import warnings

from twisted.internet.testing import StringTransport
from twisted.web.test.requesthelper import DummyRequest

from withcache.web.blobs import secure_read_path

with warnings.catch_warnings():
    # twisted.web.proxy, which the worker forwards with, is built on the deprecated HTTPClient.
    warnings.simplefilter("ignore", DeprecationWarning)
    from withcache.web.worker import _HostAnswer

SANDBOX = b"sandbox; default-src 'none'"


def forwarded(answer: bytes) -> DummyRequest:
    """The client's request after the host's answer (raw HTTP) came back through a worker."""
    father = DummyRequest([b""])
    secure_read_path(father)  # as WorkerRoot does before it passes a request on
    client = _HostAnswer(b"GET", b"/b/x/y", b"HTTP/1.1", {}, b"", father)
    client.makeConnection(StringTransport())
    client.dataReceived(answer)
    return father


def test_a_forwarded_read_path_answer_carries_the_sandbox_policy_and_nosniff_once():
    father = forwarded(
        b"HTTP/1.1 404 Not Found\r\nX-Content-Type-Options: nosniff\r\n"
        b"Content-Security-Policy: " + SANDBOX + b"\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    headers = father.responseHeaders
    assert headers.getRawHeaders(b"content-security-policy") == [SANDBOX]
    assert headers.getRawHeaders(b"x-content-type-options") == [b"nosniff"]


def test_the_hosts_own_policy_replaces_the_one_the_worker_set():
    """An operator page passed through a worker keeps the host's policy, not the sandbox."""
    father = forwarded(
        b"HTTP/1.1 200 OK\r\nContent-Security-Policy: default-src 'none'; script-src 'self'\r\n"
        b"X-Content-Type-Options: nosniff\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    headers = father.responseHeaders
    assert headers.getRawHeaders(b"content-security-policy") == [
        b"default-src 'none'; script-src 'self'"
    ]
    assert headers.getRawHeaders(b"set-cookie") == [b"a=1", b"b=2"]
