"""Hostile input at volume: the read path over raw sockets and the shim's plan(), fuzzed.

At least 10,000 generated cases in the short form (FUZZ budgets below, times the long form's
scale), plus hand-written nasty ones. The read path must never answer 5xx, never show a
traceback, and keep running; plan() must never raise and only ever rewrite a URL the probe
called a hit. Requests are written byte by byte on a socket, so inputs that urllib or
http.client would refuse (non-ASCII, CR/LF in values, 64 KiB lines) reach the host as sent.
"""

from __future__ import annotations

import base64
import os
import socket
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from withcache_shim.plan import explain
from withcache_shim.rules import find_urls
from withcache_shim.urls import cache_url

from tests.shim.test_plan_properties import tools_and_args
from tests.shim_e2e_support import make_tool
from tests.support import assert_clean_log, start_host, token, write_file
from tests.test_hostile_input import header_text, path_text, ranges, token_ish, url_values

HIT = "https://vendor.example/hostile/blob.bin"
EMPTY = "https://vendor.example/hostile/empty.bin"
# Generated cases per test in the short form (the long form multiplies them by its scale).
FUZZ = {
    "plan_argv": 3000,
    "plan_env": 3000,
    "token": 1500,
    "url_param": 1500,
    "range": 1000,
    "method_and_headers": 500,
}
TRACEBACK_MARKS = (b"Traceback", b'File "', b"twisted.python.failure")

HOSTS = ["vendor.example", "[::1]", "[fe80::1%25eth0]", "127.0.0.1:99999999999999"]
HOSTS += ["vendor.example:-1", "xn--nxasmq6b.example", "ü.example", "a" * 300, "", "[::"]
hostile_urls = st.one_of(
    url_values,
    st.builds(
        "{}://{}{}/{}".format,
        st.sampled_from(["http", "https", "HTTP", "ftp", "file", "javascript", ""]),
        st.sampled_from(["u:p@", "@", ":@", "%00@", ""]),
        st.sampled_from(HOSTS),
        st.text(max_size=40),
    ),
    st.builds(lambda a, b: f"https://vendor.example/{a}\r\n{b}", st.text(max_size=9), path_text),
    st.just("https://vendor.example/a\x00b"),
)


def fuzz(budget: int, strategy, check) -> int:
    """Run check on `budget` generated values; returns how many cases ran."""
    ran = 0

    @settings(
        max_examples=budget,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(strategy)
    def case(value):
        nonlocal ran
        ran += 1
        check(value)

    case()
    assert ran >= budget, (ran, budget)
    return ran


@pytest.fixture(scope="module")
def counts(figures):
    found: dict[str, int] = {}
    yield found
    figures["hostile"] = {**found, "total": sum(found.values())}


# -- the read path ------------------------------------------------------------------------------


def hostile_host(tmp):
    host = start_host(tmp / "data", "--curate")
    host.seed(HIT, write_file(tmp / "blob", 10_000))
    host.seed(EMPTY, write_file(tmp / "empty", 0))
    host.port = int(host.url.rsplit(":", 1)[1])
    return host


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    host = hostile_host(tmp_path_factory.mktemp("hostile"))
    yield host
    assert host.proc.poll() is None, "the host died"
    host.stop()
    assert_clean_log(host)


def send(host, head: bytes, allow_drop: bool = False) -> tuple[int | None, bytes]:
    """Send one request (request line and headers as given), return (status, whole answer)."""
    with socket.create_connection(("127.0.0.1", host.port), timeout=10) as sock:
        sock.sendall(head + b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            if not allow_drop:
                raise
    if not answer:
        assert allow_drop, f"no answer to {head[:200]!r}"
        return None, b""
    status = int(answer.split(b" ", 2)[1])
    assert status < 500, (head[:300], answer[:500])
    for mark in TRACEBACK_MARKS:
        assert mark not in answer, (head[:300], answer[:2000])
    return status, answer


def get(host, target: bytes, headers: bytes = b"", method: bytes = b"GET") -> int | None:
    return send(host, method + b" " + target + b" HTTP/1.1\r\n" + headers)[0]


def test_fuzzed_tokens_names_and_url_values_never_5xx(target, form, counts):
    def by_token(case):
        raw, name, method = case
        path = f"/b/{quote(raw, safe='')}/{quote(name)}".encode()
        # 308: the router's canonical form of a path with an empty segment (e.g. "/b//x").
        assert get(target, path, method=method) in (200, 308, 400, 404)

    def by_url(url):
        path = ("/blob?url=" + quote(url, safe="")).encode()
        assert get(target, path) in (200, 400, 404)
        assert get(target, f"/b/{token(url)}/x".encode(), method=b"HEAD") in (200, 308, 400, 404)

    tokens = st.one_of(token_ish, hostile_urls.map(token))
    strategy = st.tuples(tokens, path_text, st.sampled_from([b"GET", b"HEAD"]))
    counts["read_path_tokens"] = fuzz(FUZZ["token"] * form.fuzz_scale, strategy, by_token)
    counts["read_path_url_values"] = fuzz(FUZZ["url_param"] * form.fuzz_scale, hostile_urls, by_url)


def test_fuzzed_range_headers_as_raw_bytes_never_5xx(target, form, counts):
    hit = f"/b/{token(HIT)}/blob.bin".encode()
    raw_ranges = st.one_of(
        ranges.map(lambda r: r.encode("latin-1")),
        st.binary(max_size=60).map(lambda b: b"bytes=" + b.replace(b"\r", b"").replace(b"\n", b"")),
    )

    def check(case):
        value, inm = case
        headers = b"Range: " + value + b"\r\n"
        if inm.strip():
            headers += b"If-None-Match: " + inm.strip().encode("latin-1") + b"\r\n"
        status, answer = send(target, b"GET " + hit + b" HTTP/1.1\r\n" + headers)
        assert status in (200, 206, 304, 400, 416)
        assert len(answer.partition(b"\r\n\r\n")[2]) <= 10_000  # never more than the blob

    counts["read_path_ranges"] = fuzz(
        FUZZ["range"] * form.fuzz_scale, st.tuples(raw_ranges, header_text), check
    )


@pytest.mark.parametrize("value", [b"bytes=", b"bytes=,", b"bytes = , ,"])
def test_a_range_header_with_no_ranges_is_ignored(tmp_path, value):
    host = hostile_host(tmp_path)  # a host of its own: a 500 would leave a traceback in its log
    try:
        status, answer = send(host, GET_HIT + b"Range: " + value + b"\r\n")
    finally:
        host.stop()
    assert (status, len(answer.partition(b"\r\n\r\n")[2])) == (200, 10_000)
    assert_clean_log(host)


def test_fuzzed_methods_and_header_blocks_never_5xx(target, form, counts):
    methods = st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"BREW"])
    paths = st.sampled_from([b"/healthz", b"/blob?url=x", f"/b/{token(HIT)}/a".encode(), b"/"])
    names = st.text("abcXYZ-_", min_size=1, max_size=20).map(str.encode)
    values = st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
    blocks = st.lists(st.tuples(names, values), max_size=20)

    def check(case):
        method, path, block = case
        headers = b"".join(n + b": " + v + b"\r\n" for n, v in block)
        assert get(target, path, headers, method) is not None

    counts["read_path_methods_headers"] = fuzz(
        FUZZ["method_and_headers"] * form.fuzz_scale, st.tuples(methods, paths, blocks), check
    )


GET_HIT = b"GET /b/" + token(HIT).encode() + b"/x HTTP/1.1\r\n"
# 200 one-byte ranges with gaps: their part headers would make an answer twice the blob.
TINY_RANGES = b",".join(b"%d-%d" % (i, i) for i in range(0, 400, 2))
GET_EMPTY = b"GET /b/" + token(EMPTY).encode() + b"/x HTTP/1.1\r\n"
NASTY = [
    (b"GET /b/" + b"A" * 65536 + b"/x HTTP/1.1\r\n", True),
    (b"GET /blob?url=" + b"%41" * 22000 + b" HTTP/1.1\r\n", True),
    (b"GET /healthz HTTP/1.1\r\nX-Long: " + b"v" * 65536 + b"\r\n", True),
    (b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(2000)), True),
    (b"GET /b/%%%/x HTTP/1.1\r\n", False),
    (b"GET /b/\xff\xfe\x00/x HTTP/1.1\r\n", True),
    (b"GET /b/" + token("http://a\r\nb/").encode() + b"/x HTTP/1.1\r\n", False),
    (b"GET /b/" + token("http://a\x00b/").encode() + b"/x HTTP/1.1\r\n", False),
    (b"GET /b/" + base64.urlsafe_b64encode(b"\xff\xfe").rstrip(b"=") + b"/x HTTP/1.1\r\n", False),
    (b"GET /b/QQ=/x HTTP/1.1\r\n", False),
    (b"GET /b/Q/x HTTP/1.1\r\n", False),
    (b"GET /blob?url=http%3A%2F%2Fvendor.example%0D%0AX-Evil%3A%201%2F HTTP/1.1\r\n", False),
    (b"GET /blob?url=http%3A%2F%2Fvendor.example%00%2Fa HTTP/1.1\r\n", False),
    (b"GET /blob?url=http://vendor.example:99999999999999999999/a HTTP/1.1\r\n", False),
    (b"GET /blob?url=http://u:p@vendor.example/a HTTP/1.1\r\n", False),
    (b"GET /blob?url=http://[::1]:80/a HTTP/1.1\r\n", False),
    (b"GET /blob?url=http://[fe80::1%25eth0]/a HTTP/1.1\r\n", False),
    (b"GET /blob?url=http://[::/a HTTP/1.1\r\n", False),
    (b"GET /blob?url=a&url=b HTTP/1.1\r\n", False),
    (b"GET /blob?url=%ff%fe HTTP/1.1\r\n", False),
    (b"GET /blob?url= HTTP/1.1\r\n", False),
    (GET_HIT + b"Range: bytes=\xff-\x00\r\n", False),
    (GET_HIT + b"Range: bytes=99999999999999999999999-\r\n", False),
    (GET_HIT + b"Range: bytes=-0\r\n", False),
    (GET_HIT + b"Range: bytes=" + b"0-1," * 1000 + b"\r\n", False),
    (GET_HIT + b"Range: bytes=" + b"0-," * 500 + b"\r\n", False),
    (GET_HIT + b"Range: bytes=" + TINY_RANGES + b"\r\n", False),
    (GET_HIT + b"Range: bytes=" + b"-1," * 3000 + b"\r\n", False),
    (GET_HIT + b"Range: bytes=0-1," + b"9" * 5000 + b"-\r\n", False),
    (GET_HIT + b"Range: bytes=0-" + b"9" * 5000 + b",5-6\r\n", False),
    (GET_HIT + b"Range: bytes=10000-,20000-30000\r\n", False),
    (GET_EMPTY + b"Range: bytes=0-0,1-1\r\n", False),
    (GET_EMPTY + b"Range: bytes=-1,0-\r\n", False),
    (GET_EMPTY + b"Range: bytes=0-\r\n", False),
    (GET_HIT + b"If-None-Match: \xff\xfe\r\n", False),
    (b"GET /b/" + token(HIT).encode() + b"/x HTTP/1.0\r\n", False),
    (b"GET /healthz HTTP/9.9\r\n", True),
    (b"GET healthz HTTP/1.1\r\n", True),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64) + b"\r\n", True),
    (b"POST /b/x/y HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", True),
    (b"GET /admin/fragments/%2e%2e%2f%2e%2e%2fetc%2fpasswd HTTP/1.1\r\n", False),
    (b"GET /static/..%2f..%2fcache.db HTTP/1.1\r\n", False),
    (b"GET /static/../../cache.db HTTP/1.1\r\n", False),
]  # fmt: skip


def test_hand_written_nasty_requests_get_a_clean_answer_or_a_clean_close(target, counts):
    answered = 0
    for head, may_drop in NASTY:
        status, answer = send(target, head, allow_drop=may_drop)
        if status is not None:
            answered += 1
            assert b"session-secret" not in answer and b"SQLite format" not in answer
            assert len(answer.partition(b"\r\n\r\n")[2]) <= 10_000  # no blob is longer
    assert answered >= len(NASTY) - 8
    assert get(target, b"/healthz") == 200
    counts["read_path_hand_written"] = len(NASTY)


# -- the shim's command line ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_bin(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fakebin")
    make_tool(directory, "curl")
    make_tool(directory, "wget")
    return directory


# What argv can hold on Linux: any bytes but NUL, as os.fsdecode gives them to Python.
os_words = st.binary(max_size=40).map(lambda b: os.fsdecode(b.replace(b"\0", b"")))
hostile_argv = st.tuples(
    st.sampled_from(["curl", "wget"]),
    st.lists(st.one_of(os_words, hostile_urls.filter(lambda u: "\0" not in u)), max_size=10),
)
SERVERS = ["cache.lab:3000", "http://cache.lab:3000/", "https://[::1]:8443", "ftp://x", " "]
SERVERS += ["::", "http://", "http://u:p@cache.lab", "cache.lab:99999999", "javascript:alert(1)"]
servers = st.one_of(
    st.sampled_from(SERVERS),
    os_words,
)


def check_plan(fake_bin, tool: str, args: list[str], env: dict[str, str], answers) -> None:
    asked: list[str] = []

    def probe(real, tool_name, target, via=None):
        asked.append(target)
        return answers[len(asked) % len(answers)]

    full_env = {"PATH": str(fake_bin), **env}
    result = explain(tool, [f"{tool}withcache", *args], full_env, probe)
    assert result.argv[0] == result.real == str(fake_bin / tool)
    final = result.argv[1:]
    assert len(final) == len(args)
    # A plain hit does not count for -J/--content-disposition (the host must say it serves
    # the origin's Content-Disposition); wget's cache URLs carry wget's own file name.
    needs_cd = result.server is not None and find_urls(tool, args, full_env, result.server).needs_cd
    hits = {
        i
        for i, _url, _target, answer in result.probes
        if answer == "hit+content-disposition" or (answer == "hit" and not needs_cd)
    }
    assert {i for i, (a, b) in enumerate(zip(args, final, strict=True)) if a != b} == hits
    targets = {i: target for i, _url, target, _answer in result.probes}
    for i in hits:
        assert final[i] == targets[i]
        assert final[i].startswith(cache_url(result.server, args[i]).rpartition("/")[0] + "/")
    if result.reason:
        assert final == args and asked == []


ANSWERS = st.lists(
    st.sampled_from(["hit", "hit+content-disposition", "miss", "unreachable"]),
    min_size=1,
    max_size=3,
)


def test_fuzzed_command_lines_never_break_plan(fake_bin, form, counts):
    def check(case):
        (tool, args), answers = case
        check_plan(fake_bin, tool, args, {"WITHCACHE_SERVER": "cache.lab:3000"}, answers)

    strategy = st.tuples(st.one_of(tools_and_args, hostile_argv), ANSWERS)
    counts["shim_plan_argv"] = fuzz(FUZZ["plan_argv"] * form.fuzz_scale, strategy, check)


def test_fuzzed_server_settings_never_break_plan(fake_bin, form, counts):
    def check(case):
        (tool, args), server, which, answers = case
        check_plan(fake_bin, tool, args, {which.replace("TOOL", tool.upper()): server}, answers)

    names = st.sampled_from(["WITHCACHE_SERVER", "TOOLWITHCACHE_SERVER"])
    strategy = st.tuples(st.one_of(tools_and_args, hostile_argv), servers, names, ANSWERS)
    counts["shim_plan_env"] = fuzz(FUZZ["plan_env"] * form.fuzz_scale, strategy, check)


def test_a_very_long_command_line_is_planned(fake_bin, counts):
    url = "https://vendor.example/" + "a" * 65536
    args = ["-sSfL", *(["-H", "X: " + "v" * 4096] * 200), "-o", "out", url]
    check_plan(fake_bin, "curl", args, {"WITHCACHE_SERVER": "cache.lab:3000"}, ["hit"])
    counts["shim_plan_hand_written"] = 1
