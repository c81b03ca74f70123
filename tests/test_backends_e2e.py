"""End to end on each catalog backend: the real host under twistd with `--catalog` naming a SQLite
file or a PostgreSQL database, the real curl and wget through the shims, the admin tool."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.engines.postgres import running_server
from tests.support import (
    Host,
    assert_clean_log,
    eventually,
    start_host,
    tool,
    wait_for_hit,
)
from withcache import catalog as cat
from withcache import events as ev

pytestmark = pytest.mark.e2e

BODY = b"tool bytes " * 100


def admin(catalog: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("withcache-admin"), *args, "--data-dir", str(data_dir), "--catalog", catalog],
        capture_output=True,
        text=True,
        timeout=120,
    )


def listed(catalog: str, data_dir: Path) -> dict[str, dict]:
    done = admin(catalog, data_dir, "ls", "--json")
    assert done.returncode == 0, done.stderr
    return {row["key"]: row for row in map(json.loads, done.stdout.splitlines())}


def shim(name: str, host: Host, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "WITHCACHE_SERVER": host.url}
    return subprocess.run([tool(name), *args], env=env, cwd=cwd, capture_output=True, timeout=120)


def catalog_rows(catalog: str, fn, *args):
    conn = cat.connect(catalog)
    try:
        return fn(conn, *args)
    finally:
        conn.close()


@pytest.fixture
def filling_host(tmp_path, catalog_url):
    """A host that fills misses from 127.0.0.1, its catalog at catalog_url."""
    running = start_host(
        tmp_path / "data", "--allow-private", "--stream-wait", "0", "--catalog", catalog_url
    )
    yield running
    running.stop()
    assert_clean_log(running)


def test_a_miss_fills_and_then_curl_and_wget_get_the_cached_bytes(
    filling_host, catalog_url, origin, tmp_path
):
    url = origin.put("pkg/tool-1.0.run", BODY)
    work = tmp_path / "work"
    work.mkdir()
    first = shim("curlwithcache", filling_host, ["-fsS", "-o", "first.run", url], work)
    assert first.returncode == 0, first.stderr
    wait_for_hit(filling_host, url)
    origin_gets = origin.count("/pkg/tool-1.0.run", "GET")
    done = shim("curlwithcache", filling_host, ["-fsS", "-O", url], work)
    assert done.returncode == 0, done.stderr
    (work / "tool-1.0.run").rename(work / "by-curl.run")
    done = shim("wgetwithcache", filling_host, ["-q", url], work)
    assert done.returncode == 0, done.stderr
    assert (work / "by-curl.run").read_bytes() == BODY
    assert (work / "tool-1.0.run").read_bytes() == BODY
    assert origin.count("/pkg/tool-1.0.run", "GET") == origin_gets  # both from the cache
    row = eventually(
        lambda: listed(catalog_url, filling_host.data_dir)[url],
        lambda r: r["hits"] == 2,
        what="two hits counted",
    )
    assert row["size"] == len(BODY)


def test_misses_are_recorded_in_the_catalog_and_a_fill_takes_them_over(
    tmp_path, catalog_url, origin
):
    host = start_host(tmp_path / "data", "--curate", "--catalog", catalog_url)
    try:
        url = origin.put("pkg/wanted.iso", BODY)
        for _ in range(3):
            subprocess.run(["curl", "-sSI", host.blob_url(url)], capture_output=True, timeout=30)
        (miss,) = catalog_rows(catalog_url, cat.list_misses)
        assert (miss.url, miss.count) == (url, 3)
        seed = tmp_path / "wanted.iso"
        seed.write_bytes(BODY)
        done = admin(catalog_url, host.data_dir, "import", url, str(seed))
        assert done.returncode == 0, done.stderr
        assert catalog_rows(catalog_url, cat.list_misses) == []
        assert listed(catalog_url, host.data_dir)[url]["misses"] == 3
        wait_for_hit(host, url)
    finally:
        host.stop()
    assert_clean_log(host)


def test_the_admin_tool_pins_and_removes_what_the_host_serves(tmp_path, catalog_url, origin):
    host = start_host(tmp_path / "data", "--curate", "--catalog", catalog_url)
    try:
        url = origin.put("pkg/pinned.deb", BODY)
        seed = tmp_path / "pinned.deb"
        seed.write_bytes(BODY)
        assert admin(catalog_url, host.data_dir, "import", url, str(seed)).returncode == 0
        wait_for_hit(host, url)
        assert admin(catalog_url, host.data_dir, "pin", url).returncode == 0
        assert listed(catalog_url, host.data_dir)[url]["pinned"] is True
        removed = admin(catalog_url, host.data_dir, "rm", url)
        assert removed.returncode == 0 and "removed" in removed.stdout
        assert listed(catalog_url, host.data_dir) == {}
        # The host notices within a second, and no blob is left behind.
        eventually(
            lambda: (
                subprocess.run(
                    ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", host.blob_url(url)],
                    capture_output=True,
                    text=True,
                    timeout=30,
                ).stdout
            ),
            lambda code: code == "404",
            what="the removed artifact answered 404",
        )
        assert [p for p in (host.data_dir / "blobs").rglob("*") if p.is_file()] == []
        actions = {e.action for e in catalog_rows(catalog_url, lambda c: ev.query(c)[0])}
        assert {"artifact.imported", "artifact.pinned", "artifact.deleted"} <= actions
    finally:
        host.stop()
    assert_clean_log(host)


def test_fills_past_max_bytes_evict_the_least_recently_hit(tmp_path, catalog_url, origin):
    host = start_host(
        tmp_path / "data",
        "--allow-private",
        "--stream-wait",
        "0",
        "--max-bytes",
        "2500",
        "--catalog",
        catalog_url,
    )
    try:
        urls = [origin.put(f"pkg/{n}.bin", bytes([n]) * 1000) for n in range(3)]
        for url in urls:
            subprocess.run(["curl", "-sSI", host.blob_url(url)], capture_output=True, timeout=30)
            wait_for_hit(host, url)
        held = listed(catalog_url, host.data_dir)
        assert set(held) == set(urls[1:])
        assert sum(row["size"] for row in held.values()) <= 2500
    finally:
        host.stop()
    assert_clean_log(host)


def test_postgresql_restarting_under_a_running_host_loses_nothing_and_it_reconnects(
    tmp_path, origin
):
    """The catalog's server restarts (an upgrade, a failover): the committed artifact is still
    served, and misses after the restart fill as before."""
    with running_server(template=False) as server:
        host = start_host(
            tmp_path / "data", "--allow-private", "--stream-wait", "0", "--catalog", server.url()
        )
        try:
            before = origin.put("pkg/before.run", BODY)
            subprocess.run(["curl", "-sSI", host.blob_url(before)], capture_output=True, timeout=30)
            wait_for_hit(host, before)
            server.restart()
            after = origin.put("pkg/after.run", BODY + b"!")
            wait_for_hit(host, after, timeout=60)  # its HEADs are misses until a fill lands
            got = subprocess.run(
                ["curl", "-sSf", host.blob_url(before)], capture_output=True, timeout=30
            )
            assert got.stdout == BODY
            assert set(listed(server.url(), host.data_dir)) == {before, after}
        finally:
            host.stop()
        assert_clean_log(host)


def test_serving_workers_read_a_postgresql_catalog_whose_password_is_never_shown(
    tmp_path, postgres_url
):
    """The test server trusts loopback, so any password works: the point is where it shows."""
    secret = "pw-" + os.urandom(6).hex()
    with_password = postgres_url.replace("postgres@", f"postgres:{secret}@")
    host = start_host(tmp_path / "data", "--curate", "--processes", "2", "--catalog", with_password)
    try:
        host.wait_for_log("started 1 serving workers")
        children = subprocess.run(
            ["pgrep", "-P", str(host.pid)], capture_output=True, text=True
        ).stdout.split()
        assert children
        for pid in children:
            assert secret not in Path(f"/proc/{pid}/cmdline").read_text()
        # Hits answered by the host and its worker, both reading the catalog in PostgreSQL.
        seed = tmp_path / "seed.bin"
        seed.write_bytes(BODY)
        url = "http://127.0.0.1:9/pkg/seeded.bin"
        assert admin(postgres_url, host.data_dir, "import", url, str(seed)).returncode == 0
        for _ in range(20):
            got = subprocess.run(
                ["curl", "-sSf", host.blob_url(url)], capture_output=True, timeout=30
            )
            assert got.stdout == BODY
    finally:
        host.stop()
    log = host.log()
    assert secret not in log
    assert "postgres:***@" in log and "carries a password" in log


def test_while_postgresql_is_down_the_api_and_the_read_path_answer_503_then_recover(tmp_path):
    """Every answer that needs the catalog says "try again" (503, Retry-After: 1) while the
    database is down — a problem+json on the API, plain text on the read path (a shim then runs
    the tool as written) — and the same calls succeed once it is back."""
    from tests.api_support import call

    with running_server() as server:
        catalog = server.url("withcache_template")
        data = tmp_path / "data"
        host = start_host(data, "--allow-private", "--catalog", catalog)
        try:
            made = admin(catalog, data, "token", "create", "ci", "--scope=admin")
            assert made.returncode == 0, made.stderr
            secret = made.stdout.strip()
            assert call(host.url, "GET", "/api/v1/stats", secret).status == 200
            miss = host.blob_url("https://vendor.example.com/new.run")
            server.stop()
            down = call(host.url, "GET", "/api/v1/stats", secret)
            assert (down.status, down.header("Retry-After")) == (503, "1")
            assert down.doc["type"] == "urn:withcache:problem:catalog-unavailable"
            read = subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "20", miss],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert read.stdout == "503"
            server.start()
            eventually(
                lambda: call(host.url, "GET", "/api/v1/stats", secret).status,
                lambda status: status == 200,
                timeout=30,
                what="the API answering again after PostgreSQL came back",
            )
            assert host.get(miss.removeprefix(host.url))[0] == 404  # a miss, counted again
        finally:
            host.stop()  # the outage is logged, as it should be
