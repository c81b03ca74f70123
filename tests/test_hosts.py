"""The Host names the operator UI answers to (issue 13, 12c: DNS rebinding), as a table."""

from __future__ import annotations

import socket

import pytest

from withcache.web.hosts import AdminHosts, default_names, host_name

HOSTS = AdminHosts([*default_names(), "cache.lab.example", "*.mirrors.example"])


@pytest.mark.parametrize(
    "header",
    [
        b"localhost",
        b"localhost:3000",
        b"LOCALHOST.",
        b"127.0.0.1:3000",
        b"10.0.0.5",
        b"[::1]:3000",
        b"[::1]",
        b"[2001:db8::7]:80",
        b"cache.lab.example:3000",
        b"Cache.Lab.Example",
        b"eu.mirrors.example",
        socket.gethostname().encode(),
        socket.getfqdn().encode() + b":8080",
        None,  # HTTP/1.0 without a Host header: not a browser
    ],
)
def test_its_own_names_and_ip_literals_are_answered(header):
    assert HOSTS.allows(header)


@pytest.mark.parametrize(
    "header",
    [
        b"evil.example",
        b"evil.example:3000",
        b"localhost.evil.example",
        b"cache.lab.example.evil.example",
        b"mirrors.example",  # the glob wants a label in front
        b"",
        b"[evil.example]:3000",
        b"[::1",
        b"[::1]x",
        b"127.0.0.1:port",
        b"\xff.example",
        b"2130706433",  # 127.0.0.1 as a number: a browser would have sent 127.0.0.1
    ],
)
def test_other_names_are_refused(header):
    assert not HOSTS.allows(header)


def test_a_star_answers_any_name():
    assert AdminHosts(["*"]).allows(b"evil.example")


@pytest.mark.parametrize(
    ("header", "name"),
    [
        (b"Example.COM.:80", "example.com"),
        (b"[::1]:3000", "::1"),
        (b"10.0.0.5:3000", "10.0.0.5"),
        (b"a:b", None),
    ],
)
def test_host_name_drops_the_port_brackets_and_trailing_dot(header, name):
    assert host_name(header) == name
