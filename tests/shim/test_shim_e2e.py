"""End to end: the shim in front of the real curl and wget, the real cache-host, a local origin.

The cache holds different bytes from the origin for the same URL, so every download shows
where it came from; the origin counts the requests it gets. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import REAL_CURL, REAL_WGET, clean_env, make_tool, run_shim

from tests.shim_e2e_support import CACHED, FRESH, misses, seeded

pytestmark = pytest.mark.e2e


@pytest.fixture
def work(tmp_path) -> Path:
    """The directory a user's command runs in; also its HOME, so no rc file interferes."""
    directory = tmp_path / "work"
    directory.mkdir()
    return directory


def env_for(work: Path, server: str | None, **extra: str) -> dict[str, str]:
    env = clean_env(PATH="/usr/bin:/bin", HOME=str(work), **extra)
    if server is not None:
        env["WITHCACHE_SERVER"] = server
    return env


def closed_port() -> tuple[socket.socket, str]:
    """A 127.0.0.1 port that refuses connections, held so no one else can take it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, f"127.0.0.1:{sock.getsockname()[1]}"


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def test_curl_hit_is_served_by_the_cache_and_named_after_the_artifact(host, origin, work):
    url = seeded(host, origin, "pkg/tool-1.0.tar.gz")
    done = run_shim("curl", ["-fsS", "-O", url], env_for(work, host.url), cwd=work)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == (b"", b"")
    assert (work / "tool-1.0.tar.gz").read_bytes() == CACHED
    assert origin.requests == []


def test_wget_hit_is_served_by_the_cache_and_named_after_the_artifact(host, origin, work):
    url = seeded(host, origin, "pkg/driver-2.run")
    done = run_shim("wget", ["-q", url], env_for(work, host.url), cwd=work)
    assert done.returncode == 0, done.stderr
    assert (work / "driver-2.run").read_bytes() == CACHED
    assert origin.requests == []


def test_vendor_style_lines_hit(host, origin, work):
    url = seeded(host, origin, "rocm/amdgpu-install_6.0.60002-1_all.deb")
    env = env_for(work, host.url)
    assert run_shim("curl", ["-fsSLo", "a.deb", url], env, cwd=work).returncode == 0
    out = run_shim("wget", ["-qO-", url], env, cwd=work)
    assert (work / "a.deb").read_bytes() == out.stdout == CACHED
    assert origin.requests == []


def test_curl_miss_goes_to_the_origin_and_the_host_records_it(host, origin, work):
    url = origin.put("pkg/new-3.0.tar.gz", FRESH)
    done = run_shim("curl", ["-fsS", "-O", url], env_for(work, host.url), cwd=work)
    assert done.returncode == 0, done.stderr
    assert (work / "new-3.0.tar.gz").read_bytes() == FRESH
    assert origin.count(path_of(url), "GET") >= 1
    assert misses(host) == {url: 1}


def test_wget_miss_goes_to_the_origin_and_the_host_records_it(host, origin, work):
    url = origin.put("pkg/new-4.0.iso", FRESH)
    done = run_shim("wget", ["-q", url], env_for(work, host.url), cwd=work)
    assert done.returncode == 0, done.stderr
    assert (work / "new-4.0.iso").read_bytes() == FRESH
    assert origin.count(path_of(url), "GET") >= 1
    assert misses(host) == {url: 1}


def test_one_curl_command_mixes_a_hit_and_a_miss(host, origin, work):
    hit = seeded(host, origin, "pkg/a.bin")
    miss = origin.put("pkg/b.bin", FRESH)
    args = ["-fsS", "-o", "a", hit, "-o", "b", miss]
    assert run_shim("curl", args, env_for(work, host.url), cwd=work).returncode == 0
    assert (work / "a").read_bytes() == CACHED
    assert (work / "b").read_bytes() == FRESH
    assert origin.count("/pkg/a.bin") == 0


def test_a_failing_origin_keeps_the_tools_own_exit_status(host, origin, work):
    gone = origin.url + "/pkg/missing.tar"  # 404 at the origin, and not cached
    env = env_for(work, host.url)
    assert run_shim("curl", ["-fsS", "-o", "x", gone], env, cwd=work).returncode == 22
    assert run_shim("wget", ["-q", gone], env, cwd=work).returncode == 8


def test_pass_through_commands_never_reach_the_host(host, origin, work):
    url = seeded(host, origin, "pkg/c.bin")
    env = env_for(work, host.url)
    assert run_shim("curl", ["-fsS", "-o", "c", "-H", "Cookie: a=b", url], env, cwd=work)
    assert run_shim("wget", ["-q", "--user=u", "--password=p", url], env, cwd=work)
    assert (work / "c").read_bytes() == (work / "c.bin").read_bytes() == FRESH
    assert origin.count("/pkg/c.bin", "GET") == 2
    assert misses(host) == {}


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_finding6_a_credential_in_the_query_passes_through_without_a_probe(
    host, origin, work, tool
):
    """The cache holds the URL without the token; a user's own token still goes to the origin,
    and the host never hears of it."""
    url = seeded(host, origin, f"pkg/private-{tool}.bin")
    args = ["-fsS", "-o", "out", f"{url}?access_token=SECRET"]
    if tool == "wget":
        args = ["-q", "-O", "out", f"{url}?access_token=SECRET"]
    done = run_shim(tool, args, env_for(work, host.url), cwd=work)
    assert done.returncode == 0, done.stderr
    assert (work / "out").read_bytes() == FRESH
    assert origin.requests == [("GET", f"{path_of(url)}?access_token=SECRET")]
    assert "/b/" not in host.log() and "SECRET" not in host.log()


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_a_host_that_refuses_connections_means_plain_behaviour(origin, work, tool):
    url = origin.put("pkg/d.bin", FRESH)
    sock, server = closed_port()
    with sock:
        args = ["-fsS", "-O", url] if tool == "curl" else ["-q", url]
        done = run_shim(tool, args, env_for(work, server), cwd=work)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""  # the failed probe is not shown
    assert (work / "d.bin").read_bytes() == FRESH


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_without_a_server_there_is_no_probe_at_all(host, origin, work, tool):
    url = seeded(host, origin, f"pkg/e-{tool}.bin")
    log = work / "calls.log"
    real = REAL_CURL if tool == "curl" else REAL_WGET
    # The real tool, wrapped so that every invocation, probe or not, is logged.
    wrapper = make_tool(work / "bin", tool, f'echo "$*" >> {log}\nexec {real} "$@"')
    env = env_for(work, None, REAL_CURL=str(wrapper), REAL_WGET=str(wrapper))
    args = ["-fsS", "-O", url] if tool == "curl" else ["-q", url]
    assert run_shim(tool, args, env, cwd=work).returncode == 0
    assert log.read_text().splitlines() == [" ".join(args)]
    assert (work / f"e-{tool}.bin").read_bytes() == FRESH
    assert misses(host) == {}
    # The same wrapper with a server set: the probe is made in process (the tool runs once,
    # on the cache URL) and the download comes from the cache.
    log.unlink()
    (work / f"e-{tool}.bin").unlink()  # else wget would save e-wget.bin.1
    env["WITHCACHE_SERVER"] = host.url
    assert run_shim(tool, args, env, cwd=work).returncode == 0
    (line,) = log.read_text().splitlines()
    assert f"{host.url}/b/" in line
    assert (work / f"e-{tool}.bin").read_bytes() == CACHED
