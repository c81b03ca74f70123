"""End to end behind an HTTP proxy: the real tools, the real cache-host, a counting proxy.

The cache-host is named `localhost` and the origin `127.0.0.1`, so `no_proxy` can tell them
apart. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import clean_env, run_shim

from tests.probe_servers import CountingProxy
from tests.shim_e2e_support import CACHED, FRESH, seeded

pytestmark = pytest.mark.e2e


@pytest.fixture
def work(tmp_path) -> Path:
    directory = tmp_path / "work"
    directory.mkdir()
    return directory


def server_by_name(host) -> str:
    return host.url.replace("127.0.0.1", "localhost")


def args_for(tool: str, url: str) -> list[str]:
    return ["-fsS", "-o", "out", url] if tool == "curl" else ["-q", "-O", "out", url]


def run_behind(proxy, host, work, tool: str, url: str, no_proxy: str):
    """The shim run with the cache-host named by name, http_proxy set to proxy and no_proxy."""
    env = clean_env(
        PATH="/usr/bin:/bin",
        HOME=str(work),
        WITHCACHE_SERVER=server_by_name(host),
        http_proxy=proxy.url,
        no_proxy=no_proxy,
    )
    return run_shim(tool, args_for(tool, url), env, cwd=work)


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_a_cache_host_in_no_proxy_is_reached_directly(host, origin, work, tool) -> None:
    url = seeded(host, origin, f"pkg/np-{tool}.bin")
    with CountingProxy() as proxy:
        done = run_behind(proxy, host, work, tool, url, "localhost,127.0.0.1")
    assert done.returncode == 0, done.stderr
    assert (work / "out").read_bytes() == CACHED
    assert proxy.requests == []
    assert origin.requests == []


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_through_the_proxy_both_probe_and_download_go_through_it_and_hit(
    host, origin, work, tool
) -> None:
    url = seeded(host, origin, f"pkg/px-{tool}.bin")
    with CountingProxy() as proxy:
        done = run_behind(proxy, host, work, tool, url, "127.0.0.1")
    assert done.returncode == 0, done.stderr
    assert (work / "out").read_bytes() == CACHED
    methods = [method for method, _url in proxy.requests]
    assert methods == ["HEAD", "GET"]
    assert all(u.startswith(server_by_name(host) + "/b/") for _m, u in proxy.requests)
    assert origin.requests == []


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_a_proxy_that_cannot_reach_the_cache_host_means_pass_through(
    host, origin, work, tool
) -> None:
    url = seeded(host, origin, f"pkg/bad-{tool}.bin")
    with CountingProxy(reachable=False) as proxy:
        done = run_behind(proxy, host, work, tool, url, "127.0.0.1")
    assert done.returncode == 0, done.stderr
    assert (work / "out").read_bytes() == FRESH  # from the origin, untouched
    assert [method for method, _url in proxy.requests] == ["HEAD"]


def test_curl_x_on_the_command_line_is_the_route(host, origin, work) -> None:
    url = seeded(host, origin, "pkg/x.bin")
    with CountingProxy() as proxy:
        env = clean_env(PATH="/usr/bin:/bin", HOME=str(work), WITHCACHE_SERVER=server_by_name(host))
        args = ["-fsS", "-x", proxy.url, "--noproxy", "127.0.0.1", "-o", "out", url]
        done = run_shim("curl", args, env, cwd=work)
    assert done.returncode == 0, done.stderr
    assert (work / "out").read_bytes() == CACHED
    assert [method for method, _url in proxy.requests] == ["HEAD", "GET"]
