"""The origin policy's address judgement, and the Add form's pre-check of it (no sockets)."""

from __future__ import annotations

import pytest
from twisted.internet import defer, task

from withcache.origin_client import precheck_origin
from withcache.policy import OriginPolicy, RefusedOrigin, public_address


@pytest.mark.parametrize(
    "address",
    [
        "fec0::1",  # deprecated site-local (RFC 3879), fec0::/10
        "feff:ffff::1",  # the top of fec0::/10
        "fec0::1%eth0",
        "::ffff:10.0.0.1",
        "127.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "100.64.0.1",
        "169.254.169.254",
    ],
)
def test_non_public_addresses_are_refused(address):
    assert not public_address(address)
    with pytest.raises(RefusedOrigin, match="is not a public address"):
        OriginPolicy().check_address(address, address)


def test_deprecated_site_local_fec0_is_refused_like_other_non_public_ranges():
    """fec0::/10 is neither private nor reserved to Python's ipaddress, so it once passed."""
    assert not public_address("fec0::1")
    assert not public_address("fec0:1234:5678::abcd")


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
def test_public_addresses_are_allowed(address):
    assert public_address(address)
    OriginPolicy().check_address(address, address)


def precheck(url: str, resolve=None, policy: OriginPolicy | None = None, clock=None):
    """The pre-check's Deferred (fired at once unless a resolver keeps it waiting)."""
    extra = {"resolve": resolve} if resolve else {}
    coroutine = precheck_origin(policy or OriginPolicy(), url, clock or task.Clock(), **extra)
    return defer.ensureDeferred(coroutine)


def refusal(d: defer.Deferred) -> str:
    failures: list = []
    d.addErrback(failures.append)
    assert failures, "not refused"
    failures[0].trap(RefusedOrigin)
    return str(failures[0].value)


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1]/x.bin",
        "http://[::1]:8080/x.bin",
        "https://[fec0::1]/x.bin",
        "http://[fd12:3456::1]/x.bin",
        "http://[fe80::1]/x.bin",
        "http://[::ffff:127.0.0.1]/x.bin",
        "http://[::ffff:7f00:1]/x.bin",
        "http://[::]/x.bin",
        "http://127.0.0.1/x.bin",
        "http://10.1.2.3/x.bin",
    ],
)
def test_precheck_refuses_ipv6_literals_of_non_public_addresses(url):
    """The Add form's pre-check judges an address literal as the fill would, IPv6 included
    (it used to ask an IPv4-only resolver about `::1`, fail, and let the URL through)."""
    assert "is not a public address" in refusal(precheck(url))


def test_precheck_lets_public_literals_and_any_literal_with_allow_private_through():
    assert precheck("http://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/x").result is None
    allow = OriginPolicy(allow_private=True)
    assert precheck("http://[::1]/x", policy=allow).result is None


def test_precheck_refuses_a_name_only_when_every_address_is_refused():
    def resolving_to(*addresses):
        return lambda host, port: defer.succeed(list(addresses))

    assert (
        precheck("http://mixed.example/x", resolving_to("10.0.0.1", "93.184.215.14")).result is None
    )
    message = refusal(precheck("http://lab.example/x", resolving_to("10.0.0.1", "fec0::2")))
    assert "lab.example (10.0.0.1) is not a public address" in message


def test_precheck_passes_a_name_that_does_not_resolve_in_time():
    """The fill reports an unresolvable name with the resolver's reason; the form does not wait."""
    clock = task.Clock()
    d = precheck("http://slow.example/x", lambda host, port: defer.Deferred(), clock=clock)
    assert not d.called
    clock.advance(3)
    assert d.result is None
    failing = precheck("http://gone.example/x", lambda host, port: defer.fail(OSError("nxdomain")))
    assert failing.result is None
