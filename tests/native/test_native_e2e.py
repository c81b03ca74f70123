"""End to end: the native shim in front of the real curl and wget, the real cache-host, a local
origin. The same scenarios as tests/shim/test_shim_e2e.py; nothing leaves 127.0.0.1.

The cache holds different bytes from the origin for the same URL, so every download shows
where it came from; the origin counts the requests it gets.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from native_support import clean_env, link_shim, make_tool, run_native
from native_support import native_bin as native_bin  # a fixture

from tests.shim_e2e_support import CACHED, FRESH, misses, seeded

pytestmark = pytest.mark.e2e

REAL = {"curl": "/usr/bin/curl", "wget": "/usr/bin/wget"}


@pytest.fixture
def work(tmp_path) -> Path:
    directory = tmp_path / "work"
    directory.mkdir()
    return directory


@pytest.fixture
def shim(tmp_path, native_bin):
    """`shim("curl")`: the native binary installed as curlwithcache (not on PATH)."""
    directory = tmp_path / "shimbin"
    return lambda tool: link_shim(directory, f"{tool}withcache", native_bin)


def env_for(work: Path, server: str | None, **extra: str) -> dict[str, str]:
    env = clean_env(PATH="/usr/bin:/bin", HOME=str(work), **extra)
    if server is not None:
        env["WITHCACHE_SERVER"] = server
    return env


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def test_curl_hit_is_served_by_the_cache(host, origin, work, shim):
    url = seeded(host, origin, "pkg/tool-1.0.tar.gz")
    done = run_native(shim("curl"), ["-fsS", "-O", url], env_for(work, host.url), cwd=work)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == (b"", b"")
    assert (work / "tool-1.0.tar.gz").read_bytes() == CACHED
    assert origin.requests == []


def test_wget_hit_is_served_by_the_cache(host, origin, work, shim):
    url = seeded(host, origin, "pkg/driver-2.run")
    done = run_native(shim("wget"), ["-q", url], env_for(work, host.url), cwd=work)
    assert done.returncode == 0, done.stderr
    assert (work / "driver-2.run").read_bytes() == CACHED
    assert origin.requests == []


def test_vendor_style_lines_hit(host, origin, work, shim):
    url = seeded(host, origin, "rocm/amdgpu-install_6.0.60002-1_all.deb")
    env = env_for(work, host.url)
    assert run_native(shim("curl"), ["-fsSLo", "a.deb", url], env, cwd=work).returncode == 0
    out = run_native(shim("wget"), ["-qO-", url], env, cwd=work)
    assert (work / "a.deb").read_bytes() == out.stdout == CACHED
    assert origin.requests == []


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_a_miss_goes_to_the_origin_and_the_host_records_it(host, origin, work, shim, tool):
    url = origin.put(f"pkg/new-{tool}.tar.gz", FRESH)
    args = ["-fsS", "-O", url] if tool == "curl" else ["-q", url]
    done = run_native(shim(tool), args, env_for(work, host.url), cwd=work)
    assert done.returncode == 0, done.stderr
    assert (work / f"new-{tool}.tar.gz").read_bytes() == FRESH
    assert origin.count(path_of(url), "GET") >= 1
    assert misses(host) == {url: 1}


def test_one_curl_command_mixes_a_hit_and_a_miss(host, origin, work, shim):
    hit = seeded(host, origin, "pkg/a.bin")
    miss = origin.put("pkg/b.bin", FRESH)
    args = ["-fsS", "-o", "a", hit, "-o", "b", miss]
    assert run_native(shim("curl"), args, env_for(work, host.url), cwd=work).returncode == 0
    assert (work / "a").read_bytes() == CACHED
    assert (work / "b").read_bytes() == FRESH
    assert origin.count("/pkg/a.bin") == 0


def test_a_failing_origin_keeps_the_tools_own_exit_status(host, origin, work, shim):
    gone = origin.url + "/pkg/missing.tar"
    env = env_for(work, host.url)
    assert run_native(shim("curl"), ["-fsS", "-o", "x", gone], env, cwd=work).returncode == 22
    assert run_native(shim("wget"), ["-q", gone], env, cwd=work).returncode == 8


def test_pass_through_commands_never_reach_the_host(host, origin, work, shim):
    url = seeded(host, origin, "pkg/c.bin")
    env = env_for(work, host.url)
    curl_args = ["-fsS", "-o", "c", "-H", "Cookie: a=b", url]
    assert run_native(shim("curl"), curl_args, env, cwd=work).returncode == 0
    wget_args = ["-q", "--user=u", "--password=p", url]
    assert run_native(shim("wget"), wget_args, env, cwd=work).returncode == 0
    assert (work / "c").read_bytes() == (work / "c.bin").read_bytes() == FRESH
    assert origin.count("/pkg/c.bin", "GET") == 2
    assert misses(host) == {}


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_finding6_a_credential_in_the_query_passes_through_without_a_probe(
    host, origin, work, shim, tool
):
    url = seeded(host, origin, f"pkg/private-{tool}.bin")
    private = f"{url}?v=1&Access%5FToken=SECRET"
    args = ["-fsS", "-o", "out", private] if tool == "curl" else ["-q", "-O", "out", private]
    done = run_native(shim(tool), args, env_for(work, host.url), cwd=work)
    assert done.returncode == 0, done.stderr
    assert (work / "out").read_bytes() == FRESH
    assert origin.requests == [("GET", path_of(private))]
    assert "/b/" not in host.log() and "SECRET" not in host.log()


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_a_host_that_refuses_connections_means_plain_behaviour(origin, work, shim, tool):
    url = origin.put("pkg/d.bin", FRESH)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    with sock:
        server = f"127.0.0.1:{sock.getsockname()[1]}"
        args = ["-fsS", "-O", url] if tool == "curl" else ["-q", url]
        done = run_native(shim(tool), args, env_for(work, server), cwd=work)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    assert (work / "d.bin").read_bytes() == FRESH


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_without_a_server_there_is_no_probe_at_all(host, origin, work, shim, tool):
    url = seeded(host, origin, f"pkg/e-{tool}.bin")
    log = work / "calls.log"
    wrapper = make_tool(work / "bin", tool, f'echo "$*" >> {log}\nexec {REAL[tool]} "$@"')
    env = env_for(work, None, REAL_CURL=str(wrapper), REAL_WGET=str(wrapper))
    args = ["-fsS", "-O", url] if tool == "curl" else ["-q", url]
    assert run_native(shim(tool), args, env, cwd=work).returncode == 0
    assert log.read_text().splitlines() == [" ".join(args)]
    assert (work / f"e-{tool}.bin").read_bytes() == FRESH
    assert misses(host) == {}
    log.unlink()
    (work / f"e-{tool}.bin").unlink()
    # With a server: the probe is sent in process, so the tool runs once, on the cache URL.
    env["WITHCACHE_SERVER"] = host.url
    assert run_native(shim(tool), args, env, cwd=work).returncode == 0
    (line,) = log.read_text().splitlines()
    assert f"{host.url}/b/" in line
    assert (work / f"e-{tool}.bin").read_bytes() == CACHED


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_installed_as_the_tool_itself_first_on_path(host, origin, work, native_bin, tool):
    """`curl -> withcache-shim` ahead of the real curl on PATH: it skips itself and hits."""
    url = seeded(host, origin, f"pkg/f-{tool}.bin")
    shim_dir = work / "shimdir"
    link_shim(shim_dir, tool, native_bin)
    env = env_for(work, host.url)
    env["PATH"] = f"{shim_dir}:/usr/bin:/bin"
    args = ["-fsS", "-O", url] if tool == "curl" else ["-q", url]
    done = run_native(shim_dir / tool, args, env, cwd=work)
    assert done.returncode == 0, done.stderr
    assert (work / f"f-{tool}.bin").read_bytes() == CACHED
    assert origin.requests == []


# --- behind an HTTP proxy (as tests/shim/test_proxy_e2e.py) ---------------------------------


@pytest.mark.parametrize("tool", ["curl", "wget"])
@pytest.mark.parametrize(
    ("no_proxy", "reachable", "through_proxy", "expected"),
    [
        ("localhost,127.0.0.1", True, [], "cached"),  # the host in no_proxy: direct, a hit
        ("127.0.0.1", True, ["HEAD", "GET"], "cached"),  # probe and download via the proxy
        ("127.0.0.1", False, ["HEAD"], "fresh"),  # the proxy cannot reach the host
    ],
)
def test_behind_a_proxy(
    host, origin, work, shim, tool, no_proxy, reachable, through_proxy, expected
):
    from tests.probe_servers import CountingProxy

    url = seeded(host, origin, f"pkg/proxy-{tool}.bin")
    server = host.url.replace("127.0.0.1", "localhost")  # so no_proxy tells host and origin apart
    args = ["-fsS", "-o", "out", url] if tool == "curl" else ["-q", "-O", "out", url]
    with CountingProxy(reachable=reachable) as proxy:
        env = env_for(work, server, http_proxy=proxy.url, no_proxy=no_proxy)
        done = run_native(shim(tool), args, env, cwd=work)
    assert done.returncode == 0, done.stderr
    assert (work / "out").read_bytes() == (CACHED if expected == "cached" else FRESH)
    assert [method for method, _url in proxy.requests] == through_proxy
