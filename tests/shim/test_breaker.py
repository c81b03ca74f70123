"""The breaker: a cache-host found down is not probed again until its back-off has passed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import SHIMSRC
from withcache_shim import breaker, httpprobe
from withcache_shim.breaker import Breaker, backoff_ms, parse
from withcache_shim.probe import probe

from tests.probe_servers import ScriptedServer, closed_port

TARGET = "/b/aHR0cHM6Ly92LmV4YW1wbGUvYS50YXI/a.tar"


def state_file(run_dir) -> str:
    return os.path.join(run_dir, "withcache", f"breaker-{os.geteuid()}")


def read_state(run_dir, server):
    with open(state_file(run_dir), "rb") as f:
        return parse(f.read(), server)


def test_a_refused_connection_opens_the_breaker_and_nothing_is_probed_while_open(
    private_breaker_state,
) -> None:
    sock, url = closed_port()
    with sock:
        assert probe("/bin/false", "curl", url + TARGET) == "unreachable"
    state = read_state(private_breaker_state, url)
    assert state.failures == 1
    # The host is back, but the breaker is open: no request reaches it.
    with ScriptedServer("hit") as server:
        key_url = server.url
        b = Breaker.for_env(os.environ, key_url)
        b.failed(breaker.now_ms())
        assert probe("/bin/false", "curl", server.url + TARGET) == "unreachable"
        assert server.requests == []


def test_a_hung_host_opens_the_breaker(private_breaker_state, monkeypatch) -> None:
    monkeypatch.setattr(httpprobe, "BUDGET_S", 0.3)
    with ScriptedServer("hang") as server:
        assert probe("/bin/false", "curl", server.url + TARGET) == "unreachable"
        assert probe("/bin/false", "curl", server.url + TARGET) == "unreachable"
        assert len(server.requests) == 1
    assert read_state(private_breaker_state, server.url).failures == 1


def test_recovery_after_the_back_off_closes_the_breaker(private_breaker_state, monkeypatch):
    with ScriptedServer("hit") as server:
        b = Breaker.for_env(os.environ, server.url)
        b.failed(breaker.now_ms() - backoff_ms(1) - 1)  # opened long enough ago
        assert probe("/bin/false", "curl", server.url + TARGET) == "hit"
        assert len(server.requests) == 1
    assert not os.path.exists(state_file(private_breaker_state))


def test_the_back_off_grows_while_the_host_stays_down(private_breaker_state) -> None:
    sock, url = closed_port()
    with sock:
        b = Breaker.for_env(os.environ, url)
        for failures in (1, 2, 3):
            state = b.read()
            if state is not None:  # pretend the last back-off has passed
                b._write(f"{breaker.MAGIC} {state.failures} 0 {url}\n")
            before = breaker.now_ms()
            probe("/bin/false", "curl", url + TARGET)
            state = b.read()
            assert state.failures == failures
            assert before + backoff_ms(failures) <= state.until_ms
    assert [backoff_ms(n) for n in (1, 2, 3, 10)] == [10_000, 20_000, 40_000, 300_000]


def test_a_miss_also_closes_the_breaker(private_breaker_state) -> None:
    with ScriptedServer("miss") as server:
        Breaker.for_env(os.environ, server.url).failed(0)
        assert probe("/bin/false", "curl", server.url + TARGET) == "miss"
    assert not os.path.exists(state_file(private_breaker_state))


@pytest.mark.parametrize(
    "content",
    [
        b"garbage",
        b"withcache-breaker 1 x 99999999999999 KEY\n",
        b"withcache-breaker 2 1 99999999999999 KEY\n",
        b"withcache-breaker 1 1 99999999999999 KEY",
        b"withcache-breaker 1 1 99999999999999 KEY\nmore\n",
        b"withcache-breaker 1 1 99999999999999 KEY\n",  # closes after MAX_S: the clock lies
    ],
)
def test_a_corrupt_state_file_means_probing_as_before(private_breaker_state, content) -> None:
    with ScriptedServer("hit") as server:
        os.makedirs(os.path.dirname(state_file(private_breaker_state)), mode=0o700)
        with open(state_file(private_breaker_state), "wb") as f:
            f.write(content.replace(b"KEY", server.url.encode()))
        os.chmod(state_file(private_breaker_state), 0o600)
        assert probe("/bin/false", "curl", server.url + TARGET) == "hit"
        assert len(server.requests) == 1


def test_an_unusable_state_directory_means_probing_as_before(
    private_breaker_state, monkeypatch
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("HOME", "/nonexistent/home")
    sock, url = closed_port()
    with sock, ScriptedServer("hit") as server:
        assert probe("/bin/false", "curl", url + TARGET) == "unreachable"
        assert probe("/bin/false", "curl", server.url + TARGET) == "hit"
    # A group-writable directory is not trusted.
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(private_breaker_state))
    shared = private_breaker_state / "withcache"
    shared.mkdir(mode=0o700)
    shared.chmod(0o777)
    with sock, ScriptedServer("hit") as server:
        Breaker.for_env(os.environ, server.url).failed(breaker.now_ms())
        assert not os.listdir(shared)
        assert probe("/bin/false", "curl", server.url + TARGET) == "hit"


def test_a_state_for_another_server_is_ignored(private_breaker_state) -> None:
    with ScriptedServer("hit") as server:
        Breaker.for_env(os.environ, "http://other:1").failed(breaker.now_ms())
        assert probe("/bin/false", "curl", server.url + TARGET) == "hit"


def test_the_variable_turns_the_breaker_off(private_breaker_state, monkeypatch) -> None:
    monkeypatch.setenv("WITHCACHE_BREAKER", "off")
    sock, url = closed_port()
    with sock:
        probe("/bin/false", "curl", url + TARGET)
    assert not os.path.exists(state_file(private_breaker_state))


def test_concurrent_shims_leave_one_whole_state_file(private_breaker_state) -> None:
    sock, url = closed_port()
    code = (
        "from withcache_shim.probe import probe\n"
        f"for _ in range(5): probe('/bin/false', 'curl', {url + TARGET!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SHIMSRC)}
    with sock:
        procs = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(12)]
        assert [p.wait(timeout=60) for p in procs] == [0] * 12
    state = read_state(private_breaker_state, url)
    assert 1 <= state.failures <= 12 * 5
    assert os.listdir(os.path.dirname(state_file(private_breaker_state))) == [
        f"breaker-{os.geteuid()}"
    ]


def test_after_the_back_off_the_first_shim_claims_the_probe(private_breaker_state) -> None:
    """Shims started while the first one re-probes a host keep passing through."""
    b = Breaker.for_env(os.environ, "http://c.lab:1")
    b._write(f"{breaker.MAGIC} 2 0 http://c.lab:1\n")  # back-off over
    now = breaker.now_ms()
    assert b.before_probe(now) is False  # this shim probes ...
    claimed = b.read()
    assert (claimed.failures, claimed.until_ms) == (2, now + breaker.CLAIM_MS)
    assert b.before_probe(now + 1) is True  # ... the next one passes through
    assert b.before_probe(now + breaker.CLAIM_MS) is False  # the claim lapses
    b.failed(now)
    assert b.read().failures == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to someone else")
def test_a_runtime_dir_of_another_user_is_not_used(tmp_path, monkeypatch) -> None:
    """After `su`/`sudo -E`, XDG_RUNTIME_DIR may name another user's directory: the state then
    goes to the user's own ~/.cache, never into the other user's directory."""
    foreign = tmp_path / "run-user-1000"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 65534, 65534)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(foreign))
    monkeypatch.setenv("HOME", str(home))
    assert breaker.state_dir(os.environ) == str(home / ".cache" / "withcache")
    sock, url = closed_port()
    with sock:
        probe("/bin/false", "curl", url + TARGET)
    assert os.listdir(foreign) == []
    assert (home / ".cache" / "withcache" / f"breaker-{os.geteuid()}").exists()
