"""--store and its options: what is refused before anything is contacted, and what the host
leaves in the data dir for withcache-admin (never credentials)."""

from __future__ import annotations

import json

import pytest
from twisted.python import usage

from withcache.storeconfig import STORE_FILE, StoreConfig
from withcache.tap import Options


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_the_default_store_is_the_data_dirs_blobs():
    config = parse()["blob-store"]
    assert config == StoreConfig() and not config.remote


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--store", "http://bucket/x"], "not an s3://bucket/prefix URL"),
        (["--store", "s3://AKIA:secret@bucket/x"], "credentials come from"),
        (["--s3-endpoint", "http://10.0.0.9:8333"], "--s3-endpoint needs --store s3://"),
        (["--local-cache-bytes", "1G"], "--local-cache-bytes needs --store s3://"),
        (["--s3-region", "eu-west-1"], "--s3-region needs --store s3://"),
        (["--store", "/srv/blobs"], "local or s3://bucket/prefix"),
        (["--store", "s3://b/p", "--s3-endpoint", "ftp://x"], "not an http(s) URL"),
        (
            ["--store", "s3://b/p", "--s3-endpoint", "http://key:s3cr3t@10.0.0.9:8333"],
            "credentials do not go in the endpoint URL",
        ),
        (["--store", "s3://b/p", "--local-cache-bytes", "lots"], "not a size"),
    ],
)
def test_bad_store_options_are_usage_errors_that_never_echo_a_secret(argv, message):
    with pytest.raises(usage.UsageError) as raised:
        parse(*argv)
    assert message in str(raised.value)
    assert "s3cr3t" not in str(raised.value) and "secret@" not in str(raised.value)


def test_the_store_left_for_withcache_admin_holds_no_credentials(tmp_path):
    config = StoreConfig("s3://b/p", "http://10.0.0.9:8333", "eu-west-1", 1 << 30)
    config.save(str(tmp_path))
    assert json.loads((tmp_path / STORE_FILE).read_text()) == {
        "url": "s3://b/p",
        "endpoint": "http://10.0.0.9:8333",
        "region": "eu-west-1",
    }
    assert StoreConfig.saved(str(tmp_path)) == StoreConfig(
        "s3://b/p", "http://10.0.0.9:8333", "eu-west-1"
    )
    assert StoreConfig.saved(str(tmp_path / "none")) == StoreConfig()
