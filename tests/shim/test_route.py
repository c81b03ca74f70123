"""The route to the cache-host, decided as curl and wget decide theirs.

Every row of the table runs the real tool too: a counting proxy on 127.0.0.1 (which cannot
reach anything) tells whether the tool went through the proxy, and route.py must say the
same. `{P}` is the proxy's URL, `{A}` its host:port. curl is pointed at the scripted server
with --resolve, so any host name works; wget resolves for itself, so an unresolvable name
going direct simply fails (and does not reach the proxy).
"""

from __future__ import annotations

import subprocess

import pytest
from withcache_shim.argscan import scan_curl, scan_wget
from withcache_shim.route import curl_noproxy, curl_route, wget_route, wget_sufmatch

from tests.probe_servers import CountingProxy, ScriptedServer

P = "{P}"
CURL = [
    ("cache.lab", {"http_proxy": P}, [], True),
    ("cache.lab", {"HTTP_PROXY": P}, [], False),  # curl never reads HTTP_PROXY
    ("cache.lab", {"all_proxy": P}, [], True),
    ("cache.lab", {"ALL_PROXY": P}, [], True),
    ("cache.lab", {"http_proxy": "", "all_proxy": P}, [], True),
    ("cache.lab", {"https_proxy": P}, [], False),
    ("cache.lab", {"http_proxy": "{A}"}, [], True),
    ("cache.lab", {"http_proxy": P, "no_proxy": "lab"}, [], False),
    ("cache.lab", {"http_proxy": P, "no_proxy": "ache.lab"}, [], True),
    ("cache.lab", {"http_proxy": P, "no_proxy": ".lab"}, [], False),
    ("cache.lab", {"http_proxy": P, "no_proxy": "x, cache.lab"}, [], False),
    ("cache.lab", {"http_proxy": P, "no_proxy": "x cache.lab"}, [], False),
    ("cache.lab", {"http_proxy": P, "no_proxy": "x;cache.lab"}, [], True),
    ("cache.lab", {"http_proxy": P, "no_proxy": "*"}, [], False),
    ("cache.lab", {"http_proxy": P, "no_proxy": "*.lab"}, [], True),
    ("cache.lab", {"http_proxy": P, "no_proxy": "", "NO_PROXY": "cache.lab"}, [], False),
    ("cache.lab", {"http_proxy": P, "no_proxy": "x", "NO_PROXY": "cache.lab"}, [], True),
    ("cache.lab", {"http_proxy": P, "NO_PROXY": "CACHE.LAB."}, [], False),
    ("127.0.0.1", {"http_proxy": P, "no_proxy": "127.0.0.0/8"}, [], False),
    ("127.0.0.1", {"http_proxy": P, "no_proxy": "127.0.0.2/31"}, [], True),
    ("127.0.0.1", {"http_proxy": P, "no_proxy": "127.0.0.1"}, [], False),
    ("127.0.0.1", {"http_proxy": P, "no_proxy": "0.0.1"}, [], True),
    ("127.0.0.1", {"http_proxy": P, "no_proxy": "localhost"}, [], True),
    ("cache.lab", {"no_proxy": "cache.lab"}, ["-x", P], False),
    ("cache.lab", {}, ["-x", P], True),
    ("cache.lab", {"http_proxy": P}, ["-x", ""], False),
    ("cache.lab", {"http_proxy": P, "no_proxy": "cache.lab"}, ["--noproxy", ""], True),
    ("cache.lab", {"http_proxy": P}, ["--noproxy", "cache.lab"], False),
    ("cache.lab", {"http_proxy": P}, ["--noproxy", "other", "-x", P], True),
]
WGET = [
    ("cache.lab", {"http_proxy": P}, [], True),
    ("cache.lab", {"HTTP_PROXY": P}, [], False),  # wget never reads HTTP_PROXY
    ("cache.lab", {"all_proxy": P}, [], False),
    ("cache.lab", {"http_proxy": "{A}"}, [], True),
    ("cache.lab", {"http_proxy": P, "no_proxy": "lab"}, [], False),
    ("cache.lab", {"http_proxy": P, "no_proxy": "he.lab"}, [], True),  # not at a dot
    ("cache.lab", {"http_proxy": P, "no_proxy": ".lab"}, [], False),
    ("localhost", {"http_proxy": P, "no_proxy": "host"}, [], True),
    ("cache.lab", {"http_proxy": P, "no_proxy": "x, cache.lab"}, [], False),
    ("cache.lab", {"http_proxy": P, "no_proxy": "x ,cache.lab"}, [], False),
    ("cache.lab", {"http_proxy": P, "no_proxy": "cache.lab "}, [], True),
    ("cache.lab", {"http_proxy": P, "no_proxy": "x cache.lab"}, [], True),  # commas only
    ("cache.lab", {"http_proxy": P, "no_proxy": "*"}, [], True),
    ("cache.lab", {"http_proxy": P, "no_proxy": "CACHE.LAB"}, [], False),
    ("cache.lab", {"http_proxy": P, "NO_PROXY": "cache.lab"}, [], True),
    ("127.0.0.1", {"http_proxy": P, "no_proxy": "127.0.0.0/8"}, [], True),
    ("127.0.0.1", {"http_proxy": P, "no_proxy": "0.0.1"}, [], False),
    ("cache.lab", {"http_proxy": P}, ["--no-proxy"], False),
    ("cache.lab", {"http_proxy": P}, ["-Y", "off"], False),
    ("cache.lab", {"http_proxy": P}, ["--proxy=off", "--proxy"], True),
    ("cache.lab", {"http_proxy": P}, ["-e", "use_proxy=off"], False),
    ("cache.lab", {"http_proxy": P}, ["-e", "Use-Proxy = off"], False),
    ("cache.lab", {"http_proxy": P, "no_proxy": "cache.lab"}, ["-e", "no_proxy="], True),
    ("cache.lab", {"http_proxy": P, "no_proxy": "x"}, ["-e", "no_proxy=cache.lab"], False),
    ("cache.lab", {}, ["-e", f"http_proxy={P}"], True),
    ("cache.lab", {"http_proxy": P}, ["-e", "http_proxy="], False),
    ("cache.lab", {"http_proxy": P}, ["-e", "robots=off"], True),
]


def _fill(text: str, proxy: CountingProxy) -> str:
    return text.replace("{P}", proxy.url).replace("{A}", f"127.0.0.1:{proxy.port}")


def real_tool_uses_proxy(tool, host, env, args, proxy, server) -> bool:
    url = f"http://{host}:{server.port}/x"
    full_env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    full_env.update({k: _fill(v, proxy) for k, v in env.items()})
    args = [_fill(a, proxy) for a in args]
    if tool == "curl":
        resolve = f"{host}:{server.port}:127.0.0.1"
        command = ["curl", "-s", "-o", "/dev/null", "--max-time", "5", "--resolve", resolve]
    else:
        command = ["wget", "-q", "-O", "/dev/null", "--timeout=5", "--tries=1"]
    subprocess.run([*command, *args, url], env=full_env, capture_output=True, timeout=30)
    return proxy.count() > 0


def shim_route(tool, host, env, args, proxy, port):
    server = f"http://{host}:{port}"
    env = {k: _fill(v, proxy) for k, v in env.items()}
    args = [_fill(a, proxy) for a in args]
    if tool == "curl":
        return curl_route(server, scan_curl(args).opts, env)
    return wget_route(server, scan_wget(args).opts, env)


@pytest.mark.parametrize(
    ("tool", "host", "env", "args", "via_proxy"),
    [("curl", *row) for row in CURL] + [("wget", *row) for row in WGET],
    ids=[f"curl:{r[0]}:{r[1]}:{r[2]}" for r in CURL] + [f"wget:{r[0]}:{r[1]}:{r[2]}" for r in WGET],
)
def test_the_route_is_the_real_tools(tool, host, env, args, via_proxy) -> None:
    with CountingProxy(reachable=False) as proxy, ScriptedServer("hit") as server:
        real = real_tool_uses_proxy(tool, host, env, args, proxy, server)
        route = shim_route(tool, host, env, args, proxy, server.port)
    assert real == via_proxy, "the table row is wrong about the real tool"
    assert route.usable
    assert (route.proxy == ("127.0.0.1", proxy.port)) == via_proxy, route.why
    assert (route.proxy is None) == (not via_proxy)


@pytest.mark.parametrize(
    ("tool", "value", "expected"),
    [
        ("curl", "proxy.lab", ("proxy.lab", 1080)),
        ("wget", "proxy.lab", ("proxy.lab", 80)),
        ("curl", "HTTP://proxy.lab:3128/", ("proxy.lab", 3128)),
        ("curl", "http://[::1]:3128", ("::1", 3128)),
        ("curl", "socks5h://proxy.lab", "a socks5h proxy"),
        ("curl", "https://proxy.lab", "a https proxy"),
        ("wget", "http://u:p@proxy.lab:3128", "credentials"),
        ("curl", "http://proxy.lab:x", "malformed"),
        ("curl", "http://proxy.lab:0", "malformed"),
    ],
)
def test_proxy_values(tool, value, expected) -> None:
    route = (curl_route if tool == "curl" else wget_route)(
        "http://cache.lab:3000", [], {"http_proxy": value}
    )
    if isinstance(expected, tuple):
        assert (route.usable, route.proxy) == (True, expected)
    else:
        assert not route.usable and expected in route.why


def test_curl_routes_per_next_segment() -> None:
    from withcache_shim.rules import find_urls

    args = ["-x", "http://p:1", "https://v/a", "--next", "https://v/b"]
    decision = find_urls("curl", args, {}, "http://cache.lab:3000")
    assert decision.routes[2].proxy == ("p", 1)
    assert decision.routes[4].proxy is None


def test_an_https_server_with_proxy_options_on_the_command_line_passes_through() -> None:
    from withcache_shim.rules import find_urls

    decision = find_urls("curl", ["-x", "http://p:1", "https://v/a"], {}, "https://cache:443")
    assert decision.reason and "https://" in decision.reason
    decision = find_urls("curl", ["https://v/a"], {"http_proxy": "http://p:1"}, "https://c:1")
    assert decision.reason is None and decision.routes == {}


@pytest.mark.parametrize(
    ("name", "no_proxy", "match"),
    [
        ("a.b.c", "b.c", True),
        ("a.b.c", ".b.c.", True),
        ("ab.c", "b.c", False),
        ("10.1.2.3", "10.0.0.0/8", True),
        ("10.1.2.3", "10.0.0.0/33", False),
        ("10.1.2.3", "10.1.2.3/0", True),
        ("10.1.2.3", "10.1.2.4/x", False),
        ("x", None, False),
        ("x", "", False),
    ],
)
def test_curl_noproxy(name, no_proxy, match) -> None:
    assert curl_noproxy(name, no_proxy) == match


def test_wget_sufmatch_skips_empty_entries() -> None:
    assert not wget_sufmatch(["", " "], "cache.lab")
    assert wget_sufmatch(["", "LAB"], "cache.lab")
