"""deploy/cluster/compose.yml, read structurally (no container engine here): the shape issue 17
asks for, each cache-host's command accepted by withcache's own option parser, and no secret
on any command line or in the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.test_compose_file import read_block_yaml
from withcache.catalog_db import parse_url
from withcache.sizes import parse_size
from withcache.storeconfig import StoreConfig
from withcache.tap import Options

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "deploy" / "cluster"
DOC = read_block_yaml((CLUSTER / "compose.yml").read_text())
SERVICES = DOC["services"]
HOSTS = ["withcache-a", "withcache-b"]


def _option(command: list[str], name: str) -> str:
    assert command.count(name) == 1, (name, command)
    return command[command.index(name) + 1]


def test_the_cluster_has_a_catalog_a_store_two_hosts_and_a_front():
    assert set(SERVICES) == {"postgres", "seaweedfs", "seaweedfs-init", "front", *HOSTS}
    assert SERVICES["postgres"]["image"].endswith("postgres:15")
    weed = SERVICES["seaweedfs"]["command"]
    assert weed[0] == "server" and "-s3" in weed
    front = SERVICES["front"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in front["volumes"]
    assert set(front["depends_on"]) == set(HOSTS)
    # The front's upstream names exactly these hosts, on the port their image listens on.
    conf = (CLUSTER / "nginx.conf").read_text()
    assert sorted(re.findall(r"^\s*server (\S+?):3000", conf, re.M)) == HOSTS


@pytest.mark.parametrize("name", HOSTS)
def test_each_host_command_is_valid_withcache_options(name, tmp_path, monkeypatch):
    command = SERVICES[name]["command"]
    # Every option exists and takes its value; the checks that need no network agree. (The
    # rest of postOptions reaches the bucket, which lives in the compose network.)
    monkeypatch.setattr(Options, "postOptions", lambda self: None)
    options = Options()
    options.parseOptions(["--data-dir", str(tmp_path), *command])
    assert parse_url(options["catalog"]).drivername == "postgresql+psycopg"
    StoreConfig(
        options["store"], options["s3-endpoint"], local_cache_bytes=parse_size("200G")
    ).check()
    assert options["store"].startswith("s3://")


def test_the_hosts_share_catalog_and_store_but_nothing_else():
    commands = [SERVICES[h]["command"] for h in HOSTS]
    for shared in ("--catalog", "--store", "--s3-endpoint"):
        assert len({_option(c, shared) for c in commands}) == 1, shared
    for own in ("--host-id", "--advertise-url"):
        assert len({_option(c, own) for c in commands}) == len(HOSTS), own
    for host in HOSTS:
        # Its advertise URL is its own service name on the port the image listens on.
        assert _option(SERVICES[host]["command"], "--advertise-url") == f"http://{host}:3000"
    volumes = [SERVICES[h]["volumes"] for h in HOSTS]
    assert len({v[0].split(":")[0] for v in volumes}) == len(HOSTS)  # a local cache each
    assert all(v[0].endswith(":/data") for v in volumes)
    # The bucket and the catalog wait for their services; the hosts wait for both.
    for host in HOSTS:
        needs = SERVICES[host]["depends_on"]
        assert needs["postgres"]["condition"] == "service_healthy"
        assert needs["seaweedfs-init"]["condition"] == "service_completed_successfully"
    bucket = _option(commands[0], "--store").removeprefix("s3://").split("/")[0]
    assert f"s3.bucket.create -name {bucket}" in SERVICES["seaweedfs-init"]["entrypoint"][-1]


def test_no_secret_is_written_down_or_on_a_command_line():
    text = (CLUSTER / "compose.yml").read_text()
    for host in HOSTS:
        service = SERVICES[host]
        catalog = _option(service["command"], "--catalog")
        assert not re.match(r"postgresql://[^@/]*:[^@/]*@", catalog), "a password in --catalog"
        assert not any("SECRET" in arg or "PASSWORD" in arg for arg in service["command"])
        # Secrets are passed through from the environment of `compose up`, by name.
        for entry in service["environment"]:
            value = entry.partition("=")[2]
            assert value in ("", "${POSTGRES_PASSWORD}"), entry
    for other in ("postgres", "seaweedfs-init"):
        for entry in SERVICES[other]["environment"]:
            var, _, value = entry.partition("=")
            assert not value or ("PASSWORD" not in var and "SECRET" not in var), entry
    # The S3 identity is made through weed shell's stdin, never its arguments.
    init = SERVICES["seaweedfs-init"]["entrypoint"][-1]
    assert '"$$AWS_SECRET_ACCESS_KEY" | weed shell' in init
    assert not re.search(r"(?i)(secret|password)\s*[:=]\s*['\"]?\w{6,}", text)
