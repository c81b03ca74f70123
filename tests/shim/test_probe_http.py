"""The in-process probe of an http:// cache-host: one HEAD over a socket, and what it means."""

from __future__ import annotations

import time

import pytest
from withcache_shim import httpprobe
from withcache_shim.httpprobe import head, parse_head, split_http_url
from withcache_shim.probe import probe

from tests.probe_servers import ScriptedServer, closed_port

TARGET = "/b/aHR0cHM6Ly92LmV4YW1wbGUvYS50YXI/a.tar"


@pytest.mark.parametrize(
    ("mode", "kind", "down"),
    [
        ("hit", "hit", False),
        ("miss", "miss", False),
        ("redirect", "unreachable", False),
        ("garbage", "unreachable", False),
        ("close", "unreachable", True),
    ],
)
def test_outcomes(mode, kind, down) -> None:
    with ScriptedServer(mode) as server:
        answer = head(server.url + TARGET)
    assert (answer.kind, answer.down) == (kind, down)


def test_the_request_is_one_head_of_the_cache_path() -> None:
    with ScriptedServer("hit") as server:
        head(server.url + TARGET)
    assert server.requests == [f"HEAD {TARGET} HTTP/1.1"]


def test_through_a_proxy_the_request_target_is_the_whole_url() -> None:
    with ScriptedServer("hit") as proxy:
        answer = head(f"http://cache.invalid:3000{TARGET}", via=("127.0.0.1", proxy.port))
    assert answer.kind == "hit"
    assert proxy.requests == [f"HEAD http://cache.invalid:3000{TARGET} HTTP/1.1"]


def test_a_refused_connection_is_down_at_once() -> None:
    sock, url = closed_port()
    with sock:
        started = time.monotonic()
        answer = head(url + TARGET)
    assert (answer.kind, answer.down) == ("unreachable", True)
    assert time.monotonic() - started < 1


def test_a_server_that_never_answers_costs_the_budget_and_no_more(monkeypatch) -> None:
    monkeypatch.setattr(httpprobe, "BUDGET_S", 0.4)
    with ScriptedServer("hang") as server:
        started = time.monotonic()
        answer = head(server.url + TARGET)
        elapsed = time.monotonic() - started
    assert (answer.kind, answer.down) == ("unreachable", True)
    assert 0.35 < elapsed < 1.5


def test_an_unresolvable_name_is_down() -> None:
    answer = head(f"http://no-such-host.invalid:3000{TARGET}")
    assert (answer.kind, answer.down) == ("unreachable", True)


@pytest.mark.parametrize(
    ("value", "served"),
    [
        ("content-disposition, last-modified", {"content-disposition", "last-modified"}),
        ("Content-Disposition", {"content-disposition"}),
        ("last-modified", {"last-modified"}),
        (" , ", set()),
    ],
)
def test_origin_headers_are_read_case_insensitively(value, served) -> None:
    with ScriptedServer("hit", origin_headers=value) as server:
        answer = head(server.url + TARGET)
    assert answer.origin_headers == served


@pytest.mark.parametrize(
    ("value", "answer"),
    [("content-disposition, last-modified", "hit+content-disposition"), ("etag", "hit")],
)
def test_probe_reports_a_hit_with_the_origins_content_disposition(value, answer) -> None:
    with ScriptedServer("hit", origin_headers=value) as server:
        assert probe("/bin/false", "curl", server.url + TARGET) == answer


@pytest.mark.parametrize(
    "data",
    [b"", b"HTTP/1.1\r\n\r\n", b"HTTP/2 200\r\n\r\n", b"HTTP/1.1 2000 OK\r\n\r\n", b"\x00" * 50],
)
def test_malformed_heads_are_not_hits(data) -> None:
    assert parse_head(data).kind == "unreachable"


def test_a_status_line_without_a_reason_counts() -> None:
    assert parse_head(b"HTTP/1.0 200\r\n\r\n").kind == "hit"


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("http://c.lab:3000/b/t/n", ("c.lab", 3000, "c.lab:3000", "/b/t/n")),
        ("HTTP://c.lab/b/t/n", ("c.lab", 80, "c.lab", "/b/t/n")),
        ("http://[::1]:8/b/t/n", ("::1", 8, "[::1]:8", "/b/t/n")),
        ("http://u:p@c.lab/b/t/n", None),
        ("http://c.lab:0/b", None),
        ("http://c.lab:99999/b", None),
        ("http://c.lab:x/b", None),
        ("http://c lab/b", None),
        ("https://c.lab/b/t/n", None),
    ],
)
def test_split_http_url(url, parts) -> None:
    assert split_http_url(url) == parts


def test_a_server_with_credentials_in_it_is_probed_by_the_tool(tmp_path) -> None:
    log = tmp_path / "argv"
    tool = tmp_path / "curl"
    tool.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {log}\nexit 0\n')
    tool.chmod(0o755)
    assert probe(str(tool), "curl", "http://u:p@c.lab:1" + TARGET) == "hit"
    assert log.read_text().splitlines()[-1] == "http://u:p@c.lab:1" + TARGET
