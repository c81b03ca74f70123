"""The origin policy's address judgement, as a table (no sockets)."""

from __future__ import annotations

import pytest

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
