"""`python -m withcache_shim --explain`: the route, the breaker and each probe, in words."""

from __future__ import annotations

import subprocess
import sys

from conftest import clean_env

from tests.probe_servers import CountingProxy, ScriptedServer, closed_port

URL = "https://v.example/dl/a.tar"


def explain(tool: str, args: list[str], **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "withcache_shim", "--explain", tool, *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_hit_direct(private_breaker_state) -> None:
    with ScriptedServer("hit") as server:
        text = explain("curl", ["-fsSLO", URL], WITHCACHE_SERVER=server.url)
    assert "route:     direct (no proxy is set)" in text
    assert "probe:     hit in " in text
    assert "rewritten: yes" in text
    assert f"exec:    /usr/bin/curl -fsSLO {server.url}/b/" in text
    assert "breaker: closed" in text


def test_the_route_through_a_proxy_is_named(private_breaker_state) -> None:
    with CountingProxy() as proxy, ScriptedServer("hit") as server:
        text = explain(
            "wget", ["-q", URL], WITHCACHE_SERVER=server.url, http_proxy=proxy.url, no_proxy="x"
        )
    assert f"route:     through the HTTP proxy 127.0.0.1:{proxy.port} ($http_proxy)" in text
    assert [m for m, _u in proxy.requests] == ["HEAD"]


def test_an_open_breaker_says_until_when_and_sends_nothing(private_breaker_state) -> None:
    sock, url = closed_port()
    with sock:
        first = explain("curl", ["-O", URL], WITHCACHE_SERVER=url)
        second = explain("curl", ["-O", URL], WITHCACHE_SERVER=url)
    assert "breaker: closed" in first and "probe:     unreachable in" in first
    assert "breaker: OPEN until 20" in second and " UTC (" in second
    assert "1 failed probe(s) in a row" in second
    assert "(not sent: the breaker is open)" in second
    assert f"exec:    /usr/bin/curl -O {URL}" in second


def test_a_pass_through_gives_its_reason(private_breaker_state) -> None:
    text = explain("curl", ["-d", "x=1", URL], WITHCACHE_SERVER="http://127.0.0.1:9")
    assert "decision: pass through untouched: --data sends a body" in text
    text = explain("curl", ["-x", "socks5h://p:1", URL], WITHCACHE_SERVER="http://c:9")
    assert "the route to the cache-host is none the probe can take" in text
    text = explain("curl", [URL])
    assert "server:  none" in text
