"""The native shim's in-process probe and breaker, run for real against scripted servers,
and the breaker state file it shares with the Python shim."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from native_support import link_shim, make_fake_tool, native_bin  # noqa: F401
from withcache_shim import breaker
from withcache_shim.breaker import Breaker, backoff_ms, parse
from withcache_shim.probe import probe as python_probe

from tests.probe_servers import ScriptedServer, closed_port
from tests.support import eventually

URL = "https://v.example/dl/a.tar"


@pytest.fixture
def bins(tmp_path, native_bin) -> tuple[Path, Path]:  # noqa: F811
    """(the shim linked as curl, the directory of a fake real curl that prints its argv)."""
    shim = link_shim(tmp_path / "shim", "curl", native_bin)
    fake = tmp_path / "fake"
    make_fake_tool(fake, "curl")
    return shim, fake


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "xdg-run"
    run.mkdir(mode=0o700)
    return run


def env_for(bins, run_dir, server: str, **extra) -> dict[str, str]:
    shim, fake = bins
    env = {
        "PATH": f"{shim.parent}:{fake}",
        "WITHCACHE_SERVER": server,
        "XDG_RUNTIME_DIR": str(run_dir),
        "FAKE_LOG": os.devnull,
        "FAKE_PROBE_CODE": "7",
    }
    env.update(extra)
    return env


def run(bins, env) -> tuple[list[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [str(bins[0]), "-fsSLO", URL], env=env, capture_output=True, timeout=30, check=True
    )
    return done.stdout.decode().split("\0")[1:-1], time.monotonic() - started


def state(run_dir: Path, server: str):
    path = run_dir / "withcache" / f"breaker-{os.geteuid()}"
    return parse(path.read_bytes(), server) if path.exists() else None


def python_breaker(run_dir: Path, server: str) -> Breaker:
    return Breaker.for_env({"XDG_RUNTIME_DIR": str(run_dir)}, server)


@pytest.mark.parametrize(
    ("mode", "origin_headers", "rewritten"),
    [("hit", None, True), ("miss", None, False), ("garbage", None, False), ("redirect", "", False)],
)
def test_outcomes(bins, run_dir, mode, origin_headers, rewritten) -> None:
    with ScriptedServer(mode, origin_headers) as server:
        argv, _ = run(bins, env_for(bins, run_dir, server.url))
        assert len(server.requests) == 1 and server.requests[0].startswith("HEAD /b/")
    assert (argv[1] != URL) == rewritten
    assert state(run_dir, server.url) is None


def test_a_hung_host_costs_one_budget_then_the_breaker_passes_through_at_once(
    bins, run_dir
) -> None:
    with ScriptedServer("hang") as server:
        argv, first = run(bins, env_for(bins, run_dir, server.url))
        assert argv == ["-fsSLO", URL]
        assert 2.9 < first < 4.5  # the 3 s budget, respected
        assert state(run_dir, server.url).failures == 1
        for _ in range(5):
            argv, later = run(bins, env_for(bins, run_dir, server.url))
            assert argv == ["-fsSLO", URL]
            assert later < 0.5
        assert len(server.requests) == 1


def test_a_refused_connection_opens_the_breaker_for_the_python_shim_too(bins, run_dir) -> None:
    sock, url = closed_port()
    with sock:
        run(bins, env_for(bins, run_dir, url))
    written = state(run_dir, url)
    assert written.failures == 1
    assert written.until_ms >= breaker.now_ms() + backoff_ms(1) - 5000
    # The Python shim reads the native shim's file: open, so it does not probe.
    with ScriptedServer("hit") as server:
        python_breaker(run_dir, server.url).failed(breaker.now_ms())
        argv, _ = run(bins, env_for(bins, run_dir, server.url))
        assert argv == ["-fsSLO", URL] and server.requests == []
        os.environ["XDG_RUNTIME_DIR"] = str(run_dir)
        try:
            assert python_probe("/bin/false", "curl", server.url + "/b/x/a") == "unreachable"
        finally:
            del os.environ["XDG_RUNTIME_DIR"]
        assert server.requests == []


def test_recovery_closes_the_breaker_and_the_back_off_grows_while_down(bins, run_dir) -> None:
    sock, url = closed_port()
    with sock:
        python_breaker(run_dir, url)._write(f"{breaker.MAGIC} 2 0 {url}\n")  # expired
        run(bins, env_for(bins, run_dir, url))
        assert state(run_dir, url).failures == 3
        assert state(run_dir, url).until_ms >= breaker.now_ms() + backoff_ms(3) - 5000
    with ScriptedServer("hit") as server:
        python_breaker(run_dir, server.url)._write(f"{breaker.MAGIC} 4 0 {server.url}\n")
        argv, _ = run(bins, env_for(bins, run_dir, server.url))
        assert argv[1] != URL
        assert state(run_dir, server.url) is None


@pytest.mark.parametrize(
    "content",
    [b"garbage", b"withcache-breaker 1 1 99999999999999 KEY\n", b"withcache-breaker 1 1 x KEY\n"],
)
def test_a_corrupt_state_file_means_probing_as_before(bins, run_dir, content) -> None:
    with ScriptedServer("hit") as server:
        (run_dir / "withcache").mkdir(mode=0o700)
        path = run_dir / "withcache" / f"breaker-{os.geteuid()}"
        path.write_bytes(content.replace(b"KEY", server.url.encode()))
        path.chmod(0o600)
        argv, _ = run(bins, env_for(bins, run_dir, server.url))
        assert argv[1] != URL and len(server.requests) == 1


def test_without_a_usable_state_directory_every_call_probes(bins, tmp_path) -> None:
    sock, url = closed_port()
    with sock:
        env = env_for(bins, tmp_path, url)
        del env["XDG_RUNTIME_DIR"]
        env["HOME"] = str(tmp_path / "missing" / "home")
        run(bins, env)
    assert not (tmp_path / "missing").exists()
    with ScriptedServer("hit") as server:
        shared = tmp_path / "shared"
        (shared / "withcache").mkdir(parents=True)
        (shared / "withcache").chmod(0o777)  # writable by others: not trusted
        env = env_for(bins, shared, server.url)
        run(bins, env)
        assert len(server.requests) == 1


def test_the_variable_turns_the_breaker_off(bins, run_dir) -> None:
    sock, url = closed_port()
    with sock:
        run(bins, env_for(bins, run_dir, url, WITHCACHE_BREAKER="OFF"))
    assert state(run_dir, url) is None


def test_concurrent_native_shims_leave_one_whole_state_file(bins, run_dir) -> None:
    sock, url = closed_port()
    env = env_for(bins, run_dir, url)
    with sock:
        procs = [
            subprocess.Popen([str(bins[0]), URL], env=env, stdout=subprocess.DEVNULL)
            for _ in range(16)
        ]
        assert [p.wait(timeout=30) for p in procs] == [0] * 16
    assert 1 <= state(run_dir, url).failures <= 16
    assert os.listdir(run_dir / "withcache") == [f"breaker-{os.geteuid()}"]


def test_shims_started_during_a_re_probe_pass_through(bins, run_dir) -> None:
    with ScriptedServer("hang") as server:
        env = env_for(bins, run_dir, server.url)
        python_breaker(run_dir, server.url)._write(f"{breaker.MAGIC} 1 0 {server.url}\n")
        first = subprocess.Popen([str(bins[0]), URL], env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while state(run_dir, server.url).until_ms == 0:  # until the first shim has claimed
            assert time.monotonic() < deadline
            time.sleep(0.01)
        argv, elapsed = run(bins, env)
        assert argv == ["-fsSLO", URL] and elapsed < 1
        assert first.wait(timeout=30) == 0
        # The server's thread records the request; on a loaded machine it may run late.
        eventually(lambda: len(server.requests), lambda n: n == 1, 10, what="the one re-probe")
    assert state(run_dir, server.url).failures == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to someone else")
def test_a_runtime_dir_of_another_user_is_not_used(bins, tmp_path) -> None:
    foreign = tmp_path / "run-user-1000"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 65534, 65534)
    home = tmp_path / "home"
    home.mkdir()
    sock, url = closed_port()
    with sock:
        run(bins, env_for(bins, foreign, url, HOME=str(home)))
    assert os.listdir(foreign) == []
    assert (home / ".cache" / "withcache" / f"breaker-{os.geteuid()}").exists()


def test_explain_names_the_route_the_breaker_and_the_answer(native_bin, run_dir) -> None:  # noqa: F811
    sock, url = closed_port()
    env = {"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(run_dir), "WITHCACHE_SERVER": url}
    command = [str(native_bin), "--explain", "curl", "-fsSLO", URL]
    with sock, ScriptedServer("hit") as proxy:
        first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
        via = subprocess.run(
            command, env={**env, "http_proxy": proxy.url}, capture_output=True, text=True
        )
    assert first.returncode == 0, first.stderr
    assert "  route:     direct\n" in first.stdout
    assert "  breaker:   closed" in first.stdout
    assert "  probe:     unreachable\n  rewritten: no\n" in first.stdout
    assert f"exec:    /usr/bin/curl -fsSLO {URL}\n" in first.stdout
    assert "  breaker:   OPEN until 20" in second.stdout and " UTC (" in second.stdout
    assert f"  route:     through the HTTP proxy 127.0.0.1:{proxy.port}\n" in via.stdout
    assert "  probe:     hit\n  rewritten: yes\n" in via.stdout
