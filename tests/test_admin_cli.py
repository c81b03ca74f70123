"""withcache-admin: import and ls on a data dir, with and without a running host."""

import json
import subprocess

from tests.support import assert_clean_log, eventually, metrics, start_host, tool, write_file


def admin(*args, cwd=None):
    return subprocess.run(
        [tool("withcache-admin"), *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def test_import_then_ls_without_a_host(tmp_path):
    data = tmp_path / "data"
    src = write_file(tmp_path / "rocm.deb", 4096)
    out = admin(
        "import", "--data-dir", str(data), "HTTPS://Repo.example.com:443/rocm.deb", str(src)
    )
    assert out.returncode == 0, out.stderr
    digest, size, key = out.stdout.split()
    assert (size, key) == ("4096", "https://repo.example.com/rocm.deb")
    table = admin("ls", "--data-dir", str(data)).stdout.splitlines()
    assert table[0].split() == ["SHA256", "SIZE", "HITS", "MISSES", "PINNED", "KEY"]
    assert table[1].split() == [digest[:12], "4.0", "KiB", "0", "0", "no", key]
    assert admin("pin", "--data-dir", str(data), key).returncode == 0
    pinned = admin("ls", "--data-dir", str(data)).stdout.splitlines()
    assert pinned[1].split() == [digest[:12], "4.0", "KiB", "0", "0", "yes", key]
    (row,) = map(json.loads, admin("ls", "--json", "--data-dir", str(data)).stdout.splitlines())
    assert row["sha256"] == digest and row["url"] == "HTTPS://Repo.example.com:443/rocm.deb"


def test_reimport_replaces_the_blob_and_removes_the_stale_one(tmp_path):
    data = tmp_path / "data"
    url = "https://e.example.com/f"
    first = admin("import", "-d", str(data), url, str(write_file(tmp_path / "a", 10, seed=1)))
    second = admin("import", "-d", str(data), url, str(write_file(tmp_path / "b", 10, seed=2)))
    old, new = first.stdout.split()[0], second.stdout.split()[0]
    assert old != new
    assert not (data / "blobs" / old[:2] / old[2:]).exists()
    assert (data / "blobs" / new[:2] / new[2:]).exists()


def test_import_errors_are_one_line_and_exit_2(tmp_path):
    data = str(tmp_path / "data")
    src = str(write_file(tmp_path / "f", 10))
    bad_url = admin("import", "-d", data, "ftp://e.example.com/f", src)
    assert bad_url.returncode == 2
    assert bad_url.stderr.strip() == (
        "withcache-admin import: only http and https URLs are cacheable, not 'ftp'"
    )
    missing = admin("import", "-d", data, "https://e.example.com/f", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_ls_of_a_missing_data_dir_fails_clearly(tmp_path):
    out = admin("ls", "--data-dir", str(tmp_path / "nope"))
    assert out.returncode != 0 and "no such data dir" in out.stderr


def test_host_start_sweeps_tmp_and_orphan_blobs_but_keeps_listed_ones(tmp_path):
    data = tmp_path / "data"
    kept = admin(
        "import", "-d", str(data), "https://e.example.com/k", str(write_file(tmp_path / "k", 99))
    )
    digest = kept.stdout.split()[0]
    (data / "tmp" / "ingest-crashed").write_bytes(b"partial fill")
    orphan = data / "blobs" / "ff" / ("f" * 62)
    orphan.parent.mkdir()
    orphan.write_bytes(b"renamed but never recorded")
    host = start_host(data)
    try:
        log = host.wait_for_log("orphan blobs removed")
        assert "1 tmp files and 1 orphan blobs removed" in log
        assert list((data / "tmp").iterdir()) == []
        assert not orphan.exists()
        assert (data / "blobs" / digest[:2] / digest[2:]).exists()
        status, _ = host.get("/blob?url=https://e.example.com/k")
        assert status == 200
    finally:
        host.stop()


def test_import_refuses_a_content_type_that_is_not_a_media_type(tmp_path):
    data = tmp_path / "data"
    src = str(write_file(tmp_path / "f", 10))
    for bad in ("text/plain; charset=\xe9", "text/html\nX-Evil: 1", "sh"):
        out = admin(
            "import", "-d", str(data), "--content-type", bad, "https://e.example.com/f", src
        )
        assert out.returncode == 2 and "not a media type" in out.stderr, bad
    good = admin(
        "import",
        "-d",
        str(data),
        "--content-type",
        " application/x-sh ",
        "https://e.example.com/f",
        src,
    )
    assert good.returncode == 0, good.stderr
    (row,) = map(json.loads, admin("ls", "--json", "--data-dir", str(data)).stdout.splitlines())
    assert row["content_type"] == "application/x-sh"


def test_import_catalog_stores_a_content_type_that_is_not_a_media_type_as_none(tmp_path):
    """An export is a file anyone may have edited: its rows are checked like an origin's."""
    data = tmp_path / "data"
    src = str(write_file(tmp_path / "f", 10))
    assert admin("import", "-d", str(data), "https://e.example.com/f", src).returncode == 0
    export = tmp_path / "catalog.jsonl"
    assert admin("export", "-d", str(data), str(export)).returncode == 0
    row = json.loads(export.read_text())
    row.update(key="https://e.example.com/g", url="https://e.example.com/g")
    row["content_type"] = "text/html\r\nSet-Cookie: a=b"
    export.write_text(json.dumps(row) + "\n")
    assert admin("import-catalog", "-d", str(data), str(export)).returncode == 0
    rows = {
        r["key"]: r
        for r in map(json.loads, admin("ls", "--json", "-d", str(data)).stdout.splitlines())
    }
    assert rows["https://e.example.com/g"]["content_type"] is None


def test_finding6_import_refuses_a_url_with_a_credential_in_its_query(tmp_path):
    data = tmp_path / "data"
    src = write_file(tmp_path / "f", 10)
    out = admin("import", "-d", str(data), "https://e.example.com/f?private_token=SECRET", str(src))
    assert out.returncode == 2 and "credentials" in out.stderr and "SECRET" not in out.stderr
    assert admin("ls", "--json", "-d", str(data)).stdout == ""


def test_finding6_admin_keys_as_the_catalog_is_keyed_and_query_flags_rekey_it(tmp_path):
    data = tmp_path / "data"
    url = "https://e.example.com/f?v=2&sig=s"
    src = write_file(tmp_path / "f", 10)
    assert admin("import", "-d", str(data), url, str(src)).stdout.split()[2] == url[:-6]
    assert admin("pin", "-d", str(data), "--drop-query", url).stdout == (
        "pinned: https://e.example.com/f\n"
    )
    # The catalog stays keyed for --drop-query (as the host would be started) until told else.
    assert admin("unpin", "-d", str(data), url).stdout == "unpinned: https://e.example.com/f\n"
    assert admin("rm", "-d", str(data), "--keep-query", url).stdout == f"removed: {url}\n"
    both = admin("rm", "-d", str(data), "--keep-query", "--drop-query", url)
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_metrics_follow_an_import_and_rm_into_a_running_host(tmp_path):
    """withcache_artifacts and withcache_cache_bytes change with another process's import and
    rm at the host's next one-second sync, as the dashboard does (issue 21)."""
    data = tmp_path / "data"
    host = start_host(data)
    try:
        assert metrics(host)["withcache_artifacts"] == 0
        url = "https://e.example.com/cuda.run"
        out = admin("import", "-d", str(data), url, str(write_file(tmp_path / "a", 5000)))
        assert out.returncode == 0, out.stderr

        def totals():
            values = metrics(host)
            return values["withcache_artifacts"], values["withcache_cache_bytes"]

        assert eventually(totals, lambda t: t == (1, 5000), what="the import") == (1, 5000)
        assert admin("rm", "-d", str(data), url).returncode == 0
        assert eventually(totals, lambda t: t == (0, 0), what="the rm") == (0, 0)
        assert_clean_log(host)
    finally:
        host.stop()


def test_import_catalog_of_a_missing_or_malformed_file_is_one_line_and_exit_2(tmp_path):
    data = tmp_path / "data"
    missing = admin("import-catalog", "-d", str(data), str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2, missing
    assert missing.stderr == (
        f"withcache-admin import-catalog: No such file or directory: {tmp_path / 'nope.jsonl'}\n"
    )
    assert not data.exists(), "a failed import-catalog made the data dir"
    (tmp_path / "bad.jsonl").write_text('{"not": "an export"}\n')
    bad = admin("import-catalog", "-d", str(data), str(tmp_path / "bad.jsonl"))
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1, bad
    assert "is not an export" in bad.stderr and "Traceback" not in bad.stderr


def test_admin_help_describes_the_admin_tool():
    out = admin("--help")
    assert out.returncode == 0
    assert "Operator tools for a withcache data dir" in out.stdout
    assert "Console scripts" not in out.stdout and "--data-dir (default ./data)" in out.stdout


def test_ls_shows_freshness_and_validators_and_refresh_asks_for_a_revalidation(tmp_path):
    data = tmp_path / "data"
    url = "https://vendor.example/tool.run"
    assert (
        admin("import", "-d", str(data), url, str(write_file(tmp_path / "t", 10))).returncode == 0
    )
    table = admin("ls", "-d", str(data)).stdout.splitlines()
    # Imported by hand: no origin headers, so no expiry unless the host's rules give one.
    assert table[2].split(";")[0].strip() == "no expiry (no origin headers)"
    assert "validators: none" in table[2]
    out = admin("refresh", "-d", str(data), url)
    assert out.returncode == 0 and "revalidated" in out.stdout
    (row,) = map(json.loads, admin("ls", "--json", "-d", str(data)).stdout.splitlines())
    assert row["refresh"] is True and row["freshness"]["fresh"] is False
    assert admin("refresh", "-d", str(data), "https://vendor.example/other").returncode == 1


def test_ls_judges_freshness_by_the_rules_the_host_last_ran_with(tmp_path):
    from withcache import freshness

    data = tmp_path / "data"
    url = "https://vendor.example/latest/x.run"
    admin("import", "-d", str(data), url, str(write_file(tmp_path / "t", 10)))
    freshness.Policy(rules=(freshness.Rule.parse("*.run=forever"),)).save(str(data))
    (row,) = map(json.loads, admin("ls", "--json", "-d", str(data)).stdout.splitlines())
    assert row["freshness"]["text"] == "immutable by rule" and row["freshness"]["by_rule"]
    (data / freshness.POLICY_FILE).write_text("{not json")
    (row,) = map(json.loads, admin("ls", "--json", "-d", str(data)).stdout.splitlines())
    assert row["freshness"]["text"] == "no expiry (no origin headers)"
