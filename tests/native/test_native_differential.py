"""Differential: the native shim picks the same real tool, probes the same URLs and execs the
same argv as the Python shim's plan(), with the Python shim's own probe.

The native binary runs for real, as `curl`/`wget` (a symlink) first on PATH, with fake real
tools behind it. An `http://` server is one of the scripted servers of tests/probe_servers.py
on 127.0.0.1 (hit, hit with the origin's Content-Disposition, miss, garbage) or a closed port
(unreachable); both shims probe it in process and the server records each request. An
`https://` server is probed with the real tool: a fake tool called with probe_command()'s
exact arguments logs the cache URL and exits with the scripted code (0 hit; curl 22 / wget 8
miss; curl 7 / wget 4 unreachable). Called any other way a fake tool prints its path and
arguments, NUL-separated: that is the final exec. explain() runs in this process on the same
argv, environment and servers with withcache_shim.probe.probe; the real tool, the final argv
and the requests the servers and fake tools saw, in order, must all be equal.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from native_support import (
    MISS_CODE,
    UNREACHABLE_CODE,
    link_shim,
    make_fake_tool,
    make_tool,
    native_bin,  # noqa: F401 - a fixture
)
from test_plan_cases import ROWS
from test_plan_properties import tools_and_args
from withcache_shim.plan import RealToolNotFound, explain
from withcache_shim.probe import probe as python_probe

from tests.probe_servers import ScriptedServer, closed_port

ANSWERS = ("hit", "hit+content-disposition", "miss", "garbage", "unreachable")


@dataclass
class Rig:
    root: Path
    shim_dir: Path
    fake_dir: Path
    log: Path
    servers: dict[str, ScriptedServer] = field(default_factory=dict)
    closed: str = ""

    def url_for(self, answer: str) -> str:
        return self.closed if answer == "unreachable" else self.servers[answer].url

    def seen(self) -> list[str]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        for server in self.servers.values():
            lines += server.requests
            server.requests.clear()
        self.log.write_text("")
        return lines


@pytest.fixture(scope="module")
def rig(tmp_path_factory, native_bin):  # noqa: F811
    root = tmp_path_factory.mktemp("native-diff")
    rig = Rig(root, root / "shim", root / "fake", root / "probes.log")
    for tool in ("curl", "wget"):
        link_shim(rig.shim_dir, tool, native_bin)
        link_shim(rig.shim_dir, f"{tool}withcache", native_bin)
        make_fake_tool(rig.fake_dir, tool)
    rig.servers = {
        "hit": ScriptedServer("hit"),
        "hit+content-disposition": ScriptedServer("hit", "last-modified, Content-Disposition"),
        "miss": ScriptedServer("miss"),
        "garbage": ScriptedServer("garbage"),
    }
    sock, rig.closed = closed_port()
    yield rig
    sock.close()
    for server in rig.servers.values():
        server.close()


def code_for(tool: str, answer: str) -> int:
    if answer.startswith("hit"):
        return 0
    return MISS_CODE[tool] if answer == "miss" else UNREACHABLE_CODE[tool]


def compare(
    rig: Rig,
    tool: str,
    args: list[str],
    answer: str,
    env: dict[str, str] | None = None,
    shim: Path | None = None,
    lead: list[str] | None = None,
) -> None:
    """Run the native shim and plan() on the same inputs; assert the same outcome."""
    rig.seen()
    if env is None:
        env = {"PATH": f"{rig.shim_dir}:{rig.fake_dir}", "WITHCACHE_SERVER": rig.url_for(answer)}
    env = {**env, "FAKE_LOG": str(rig.log), "FAKE_PROBE_CODE": str(code_for(tool, answer))}
    shim = shim or rig.shim_dir / tool
    lead = lead or []
    done = subprocess.run(
        [str(shim), *lead, *args],
        env=env,
        cwd=rig.root,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    native_seen = rig.seen()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the Python probe reads its environment from os.environ
    try:
        want = explain(tool, [str(shim), *args], env, python_probe)
    except RealToolNotFound as exc:
        assert (done.returncode, done.stdout) == (127, b""), done
        assert done.stderr.decode() == f"{tool}withcache: {exc}\n"
        return
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert done.returncode == 0, done.stderr
    got = done.stdout.split(b"\0")[:-1]
    assert got == [os.fsencode(word) for word in want.argv], want.reason
    assert native_seen == rig.seen()


# --- the plan() table ----------------------------------------------------------------------

CASES = [(tool, line) for tool, line, _probes in ROWS]


def test_the_differential_table_is_large() -> None:
    assert len(CASES) >= 150


@pytest.mark.parametrize("answer", ANSWERS)
@pytest.mark.parametrize(("tool", "line"), CASES, ids=[f"{t}:{c}" for t, c in CASES])
def test_table(rig, tool, line, answer) -> None:
    args = [w[1:] if w.startswith("^") else w for w in shlex.split(line)]
    compare(rig, tool, args, answer)


# --- hypothesis: command lines drawn from the option tables --------------------------------


def _passable(case) -> bool:
    _tool, args = case
    return all("\x00" not in a for a in args)


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(tools_and_args.filter(_passable), st.booleans())
def test_generated(rig, case, posixly_correct) -> None:
    tool, args = case
    for answer in ANSWERS:
        env = {"PATH": f"{rig.shim_dir}:{rig.fake_dir}", "WITHCACHE_SERVER": rig.url_for(answer)}
        if posixly_correct:
            env["POSIXLY_CORRECT"] = "1"
        compare(rig, tool, args, answer, env)


# --- environment: servers, real-tool selection, invocation names ----------------------------

# "{h}" is the scripted server's host:port for the answer (a closed port for "unreachable"):
# an http:// server is probed in process, so a name would need a resolver.
LINES = {
    "curl": ["-fsSLO https://v.example/a.tar", "-o x http://{h}/a https://v.example/b"],
    "wget": ["-q https://v.example/a.tar", "-qO- https://v.example/a.tar?x=1 http://v.example/b"],
}
SERVERS = [
    {"WITHCACHE_SERVER": "{h}"},
    {"WITHCACHE_SERVER": "http://{h}/"},
    {"WITHCACHE_SERVER": " \thttps://Cache.Lab:3000// \n"},
    {"WITHCACHE_SERVER": "\u00a0http://{h}\u3000"},
    {"WITHCACHE_SERVER": "ftp://cache.lab"},
    {"WITHCACHE_SERVER": ""},
    {"WITHCACHE_SERVER": "   "},
    {"WITHCACHE_SERVER": "HTTP://{h}"},
    {"WITHCACHE_SERVER": "127.0.0.1:1", "CURLWITHCACHE_SERVER": "{h}"},
    {"WITHCACHE_SERVER": "127.0.0.1:1", "WGETWITHCACHE_SERVER": "{h}"},
    {"WITHCACHE_SERVER": "{h}", "CURLWITHCACHE_SERVER": " ", "WGETWITHCACHE_SERVER": ""},
    {"CURLWITHCACHE_SERVER": "ftp://x", "WITHCACHE_SERVER": "{h}"},
    {},
]


def filled(rig: Rig, answer: str, text: str) -> str:
    return text.replace("{h}", rig.url_for(answer).partition("://")[2])


@pytest.mark.parametrize("answer", ANSWERS)
@pytest.mark.parametrize("servers", SERVERS, ids=[repr(s) for s in SERVERS])
@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_servers(rig, tool, servers, answer) -> None:
    env = {"PATH": f"{rig.shim_dir}:{rig.fake_dir}"}
    env.update({k: filled(rig, answer, v) for k, v in servers.items()})
    for line in LINES[tool]:
        compare(rig, tool, shlex.split(filled(rig, answer, line)), answer, env)


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_real_tool_selection(rig, tool, tmp_path) -> None:
    fake = rig.fake_dir / tool
    line = shlex.split(LINES[tool][0])
    base = {"PATH": f"{rig.shim_dir}:{rig.fake_dir}", "WITHCACHE_SERVER": rig.url_for("hit")}
    override = f"REAL_{tool.upper()}"
    # A file resolving to a shim's name is skipped, as is this binary itself.
    named = make_tool(tmp_path / "named", f"{tool}withcache")
    link_shim(tmp_path / "decoy", tool, named)
    for env in [
        {**base, override: str(fake)},
        {**base, override: tool},  # a bare name is searched on PATH
        {**base, override: str(tmp_path / "missing")},
        {**base, "PATH": str(rig.shim_dir)},  # only the shim itself: exit 127
        {**base, "PATH": f"{tmp_path / 'decoy'}:{rig.shim_dir}:{rig.fake_dir}"},
        {**base, "PATH": f":{rig.shim_dir}::{rig.fake_dir}"},  # empty entries mean "."
        {**base, "PATH": f"/nonexistent:{rig.fake_dir}/"},
    ]:
        for answer in ANSWERS:
            compare(rig, tool, line, answer, env)


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_invocation_names(rig, tool, native_bin) -> None:  # noqa: F811
    line = shlex.split(LINES[tool][0])
    for answer in ANSWERS:
        compare(rig, tool, line, answer, shim=rig.shim_dir / f"{tool}withcache")
        # The binary under its own name takes the tool as its first argument.
        compare(rig, tool, line, answer, shim=native_bin, lead=[tool])


def test_an_unknown_name_is_a_usage_error(native_bin) -> None:  # noqa: F811
    done = subprocess.run([str(native_bin), "ls"], capture_output=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith(b"usage: withcache-shim [--explain] curl|wget")


def test_an_unrunnable_real_tool_exits_126(tmp_path, native_bin) -> None:  # noqa: F811
    bad = tmp_path / "curl"
    bad.write_bytes(b"\x7fELF not really")
    bad.chmod(0o755)
    env = {"PATH": "/nonexistent", "REAL_CURL": str(bad)}
    done = subprocess.run([str(native_bin), "curl", "-V"], env=env, capture_output=True)
    assert done.returncode == 126
    assert done.stderr.decode() == f"curlwithcache: cannot run {bad}: Exec format error\n"


# --- routes: proxies in the environment and on the command line -----------------------------

# "{p}" is the scripted "hit" server acting as the proxy (it answers the probe's absolute-form
# HEAD itself); the cache-host's name does not resolve, so a direct probe is unreachable and
# only a probe through the proxy can hit.
ROUTE_SERVERS = ["http://cache.lab:3000", "https://cache.lab:3000"]
ROUTES = {
    "curl": [
        ({"http_proxy": "{p}"}, []),
        ({"http_proxy": "{a}"}, []),
        ({"HTTP_PROXY": "{p}"}, []),
        ({"all_proxy": "{p}"}, []),
        ({"ALL_PROXY": "{p}", "http_proxy": ""}, []),
        ({"https_proxy": "{p}"}, []),
        ({"http_proxy": "{p}", "no_proxy": "cache.lab"}, []),
        ({"http_proxy": "{p}", "no_proxy": ".lab"}, []),
        ({"http_proxy": "{p}", "no_proxy": "ache.lab"}, []),
        ({"http_proxy": "{p}", "no_proxy": "x cache.lab,y"}, []),
        ({"http_proxy": "{p}", "no_proxy": "*"}, []),
        ({"http_proxy": "{p}", "no_proxy": "", "NO_PROXY": "CACHE.LAB."}, []),
        ({}, ["-x", "{p}"]),
        ({"http_proxy": "{p}"}, ["-x", ""]),
        ({"no_proxy": "cache.lab"}, ["-x", "{p}"]),
        ({"no_proxy": "cache.lab", "http_proxy": "{p}"}, ["--noproxy", ""]),
        ({}, ["--noproxy", "cache.lab", "-x", "{p}"]),
        ({}, ["-x", "socks5h://p:1"]),
        ({}, ["-x", "http://u:pw@p:1"]),
        ({"http_proxy": "https://p:1"}, []),
        ({}, ["-x", "{p}", "https://v.example/b.tar", "--next", "-O"]),
    ],
    "wget": [
        ({"http_proxy": "{p}"}, []),
        ({"http_proxy": "{a}"}, []),
        ({"HTTP_PROXY": "{p}"}, []),
        ({"all_proxy": "{p}"}, []),
        ({"http_proxy": "{p}", "no_proxy": "lab"}, []),
        ({"http_proxy": "{p}", "no_proxy": "he.lab"}, []),
        ({"http_proxy": "{p}", "no_proxy": "x, cache.lab"}, []),
        ({"http_proxy": "{p}", "NO_PROXY": "cache.lab"}, []),
        ({"http_proxy": "{p}"}, ["--no-proxy"]),
        ({"http_proxy": "{p}"}, ["-Y", "off"]),
        ({"http_proxy": "{p}"}, ["--proxy=off", "--proxy"]),
        ({"http_proxy": "{p}"}, ["-e", "Use-Proxy = off"]),
        ({"http_proxy": "{p}", "no_proxy": "cache.lab"}, ["-e", "no_proxy="]),
        ({}, ["-e", "http_proxy={p}"]),
        ({"http_proxy": "{p}"}, ["-e", "robots=off"]),
        ({"http_proxy": "{p}"}, ["-e", "timestamping=on"]),
        ({"http_proxy": "socks5://p:1"}, []),
    ],
}


@pytest.mark.parametrize("server", ROUTE_SERVERS)
@pytest.mark.parametrize(
    ("tool", "env", "extra"),
    [(tool, env, extra) for tool, rows in ROUTES.items() for env, extra in rows],
    ids=[f"{tool}:{env}:{extra}" for tool, rows in ROUTES.items() for env, extra in rows],
)
def test_routes(rig, tool, env, extra, server) -> None:
    proxy = rig.servers["hit"].url

    def fill(text: str) -> str:
        return text.replace("{p}", proxy).replace("{a}", proxy.partition("://")[2])

    full = {"PATH": f"{rig.shim_dir}:{rig.fake_dir}", "WITHCACHE_SERVER": server}
    full.update({k: fill(v) for k, v in env.items()})
    args = [fill(a) for a in extra] + ["-O" if tool == "curl" else "-q", "https://v.example/a.tar"]
    compare(rig, tool, args, "hit", full)
