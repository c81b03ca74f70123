"""Command-line options of the twistd plugin, and the plugin's discovery."""

import os
import re
import subprocess
from pathlib import Path

import pytest
from twisted.python import usage

from tests.support import tool
from withcache.tap import Options

DEFAULTS = {
    "data-dir": "./data",
    "listen": "tcp:3000",
    "admin-listen": None,
    "port": None,
    "workers": 2,
    "curate": 0,
    "keep-query": 0,
    "drop-query": 0,
    "max-bytes": 0,
    "max-size": 0,
    "allow-private": 0,
    "netrc-over-http": 0,
    "allow-host": [],
    "admin-host": [],
    "netrc": None,
    "credentials": None,
    "scrub-interval": 60.0,
    "idle-timeout": 60.0,
    "max-queued": 100,
    "max-fills-per-client": 10,
    "stream-wait": 1.5,
    "log-format": "text",
    "no-access-log": 0,
    "processes": 1,
}


def parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return {k: options[k] for k in DEFAULTS}


def test_defaults():
    assert parse() == DEFAULTS


def test_every_option_parsed():
    argv = (
        "--data-dir /srv/wc --port 8080 --workers 5 --curate --keep-query --max-bytes 1.5G"
        " --max-size 20G --allow-private --allow-host *.NVIDIA.com --allow-host repo.radeon.com"
        " --scrub-interval 0.5 --idle-timeout 2.5 --log-format json --no-access-log --processes 3"
        " --netrc-over-http --max-queued 0 --max-fills-per-client 3 --stream-wait 0"
        " --admin-listen tcp:3001:interface=127.0.0.1 --admin-host Cache.Lab.example"
        " --admin-host *.mirrors.example"
    )
    assert parse(*argv.split()) == {
        "data-dir": "/srv/wc",
        "listen": "tcp:8080",
        "admin-listen": "tcp:3001:interface=127.0.0.1",
        "port": 8080,
        "workers": 5,
        "curate": 1,
        "keep-query": 1,
        "drop-query": 0,
        "max-bytes": 3 << 29,
        "max-size": 20 << 30,
        "allow-private": 1,
        "netrc-over-http": 1,
        "allow-host": ["*.nvidia.com", "repo.radeon.com"],
        "admin-host": ["cache.lab.example", "*.mirrors.example"],
        "netrc": None,
        "credentials": None,
        "scrub-interval": 0.5,
        "idle-timeout": 2.5,
        "max-queued": 0,
        "max-fills-per-client": 3,
        "stream-wait": 0.0,
        "log-format": "json",
        "no-access-log": 1,
        "processes": 3,
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("512", 512),
        ("64K", 65536),
        ("10m", 10 << 20),
        ("2TiB", 2 << 40),
        ("1GB", 1 << 30),
    ],
)
def test_max_bytes_suffixes(value, expected):
    assert parse("--max-bytes", value)["max-bytes"] == expected


def test_listen_takes_an_endpoint_string():
    assert parse("--listen", "tcp:0:interface=127.0.0.1")["listen"] == "tcp:0:interface=127.0.0.1"


def test_port_alone_is_shorthand_for_listen_tcp():
    assert parse("--port", "8080")["listen"] == "tcp:8080"
    assert parse("-l", "tcp:0:interface=127.0.0.1")["listen"] == "tcp:0:interface=127.0.0.1"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "--workers: must be at least 1"),
        (["--workers", "two"], "--workers: not an integer"),
        (["--port", "70000"], "--port: must be between 1 and 65535"),
        (["--max-bytes", "lots"], "--max-bytes: not a size"),
        (["--max-bytes", "-1G"], "--max-bytes: not a size"),
        (["--listen", "carrier-pigeon:7"], "--listen: not a valid endpoint"),
        (["--listen", "tcp:notaport"], "--listen: not a valid endpoint"),
        (["--port", "80", "--listen", "tcp:81"], "--port and --listen"),
        (["--listen", "tcp:81", "--port", "80"], "--port and --listen"),
        # The default endpoint named explicitly is still --listen (it used to let --port win).
        (["--listen", "tcp:3000", "--port", "80"], "--port and --listen"),
        (["--port", "80", "--listen", "tcp:3000"], "--port and --listen"),
        (["-l", "tcp:3000", "-p", "80"], "--port and --listen"),
        (["--keep-query", "--drop-query"], "--keep-query and --drop-query"),
        (["--data-dir", ""], "--data-dir: must not be empty"),
        (["--max-size", "big"], "--max-size: not a size"),
        (["--scrub-interval", "-1"], "--scrub-interval: must be 0 or more"),
        (["--scrub-interval", "often"], "--scrub-interval: not a number"),
        (["--idle-timeout", "0"], "--idle-timeout: must be more than 0"),
        (["--idle-timeout", "nan"], "--idle-timeout: must be more than 0"),
        (["--log-format", "xml"], "--log-format: text or json"),
        (["--allow-host", " "], "--allow-host: must not be empty"),
        (["--admin-listen", "tcp:nope"], "--admin-listen: not a valid endpoint"),
        (["--admin-host", " "], "--admin-host: not a host name"),
        (["--admin-host", "http://x.example/"], "--admin-host: not a host name"),
        (["--netrc", "/nonexistent/netrc"], "--netrc: cannot read /nonexistent/netrc"),
        (["--processes", "0"], "--processes: must be between 1 and 64"),
        (["--processes", "2", "--listen", "unix:/tmp/wc.sock"], "--processes: more than one"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_option(argv, message):
    with pytest.raises(usage.UsageError, match=message.replace("(", r"\(")):
        parse(*argv)


@pytest.mark.parametrize(
    ("argv", "mode"), [([], "signed"), (["--keep-query"], "keep"), (["--drop-query"], "drop")]
)
def test_finding6_query_options_choose_the_key_mode(argv, mode):
    options = Options()
    options.parseOptions(argv)
    assert options.settings().query == mode


def test_processes_auto_is_one_per_cpu():
    assert parse("--processes", "auto")["processes"] == (os.cpu_count() or 1)


def test_netrc_supplies_credentials_by_host_but_never_its_default(tmp_path):
    (tmp_path / "netrc").write_text(
        "machine developer.nvidia.com login lab password s3cret\n"
        "default login anyone password leaked\n"
    )
    options = Options()
    options.parseOptions(["--data-dir", str(tmp_path)])
    credentials = options["credentials"]
    assert credentials("developer.nvidia.com") == ("lab", "s3cret")
    assert credentials("evil.example") is None


def test_twistd_lists_the_plugin():
    out = subprocess.run([tool("twistd"), "--help"], capture_output=True, text=True, timeout=60)
    assert "withcache" in out.stdout


def test_twistd_reports_a_bad_option_and_exits_non_zero(tmp_path):
    out = subprocess.run(
        [tool("twistd"), "-n", "withcache", "--data-dir", str(tmp_path), "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "--workers: must be at least 1" in out.stdout + out.stderr


def test_withcache_server_runs_the_same_service_in_the_foreground(tmp_path):
    import re
    import signal
    import time
    import urllib.request

    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [tool("withcache-server"), "--data-dir", str(tmp_path / "data"), "--curate"]
            + ["--listen", "tcp:0:interface=127.0.0.1"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 30
        while not (m := re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert "curate=True" in log.read_text()
    assert not (tmp_path / "twistd.pid").exists()  # no pid file left in the working directory


@pytest.mark.parametrize(
    "where, named, fix",
    [
        ("file", "session-secret", "delete it"),
        ("environment", "WITHCACHE_SESSION_SECRET", "set WITHCACHE_SESSION_SECRET to"),
    ],
)
def test_weak_secret_twistd_refuses_to_start_naming_the_source_and_the_fix(
    tmp_path, where, named, fix
):
    """Issue 13, finding 7: a weak session secret stops the host at start, with a message."""
    env = {k: v for k, v in os.environ.items() if k != "WITHCACHE_SESSION_SECRET"}
    if where == "file":
        (tmp_path / "session-secret").write_bytes(b"")
    else:
        env["WITHCACHE_SESSION_SECRET"] = "ab"
    out = subprocess.run(
        [tool("twistd"), "-n", "--pidfile=", "withcache", "--data-dir", str(tmp_path)]
        + ["--listen", "tcp:0:interface=127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    said = out.stdout + out.stderr
    assert out.returncode != 0, said
    assert named in said and fix in said and "at least 32 bytes" in said
    assert "Traceback" not in said


def test_help_texts_have_no_runs_of_spaces_from_docstrings():
    """A multi-line opt_ docstring used to show its indentation in --help (--processes)."""
    usage_text = Options().getUsage(width=80)
    descriptions = [line[31:] for line in usage_text.splitlines() if len(line) > 31]
    assert [d for d in descriptions if re.search(r"\S {2,}\S", d)] == []
    assert '"auto" is one per' in " ".join(usage_text.split())


def help_options(usage_text: str) -> dict[str, tuple[str | None, str | None]]:
    """--help's options: long name -> (short name, default shown), twistd's own left out."""
    options: dict[str, tuple[str | None, str | None]] = {}
    entries = re.split(r"\n(?=\s*(?:-\w, )?--)", usage_text.partition("Options:\n")[2])
    for entry in entries:
        head = re.match(r"\s*(?:-(\w), )?--([\w-]+)=?\s", entry)
        if head is None or head[2] in ("help", "version"):
            continue
        default = re.search(r"\[default: (.*?)\]", " ".join(entry.split()))
        options[head[2]] = (head[1], default[1] if default else None)
    return options


def readme_options() -> dict[str, tuple[str | None, str]]:
    """The README's options table: long name -> (short name, its default cell)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.partition("\n## Options\n")[2].split("\n## ")[0]
    options: dict[str, tuple[str | None, str]] = {}
    for row in re.findall(r"^\| (`--.*)$", table, flags=re.MULTILINE):
        names, default = (cell.strip() for cell in row.split(" | ")[:2])
        long = re.search(r"`--([\w-]+)", names)
        short = re.search(r"`-(\w)`", names)
        assert long, row
        options[long[1]] = (short[1] if short else None, default)
    return options


def test_the_readme_options_table_matches_help():
    """Every option in --help is in the README's table with its short name and default, and
    the table has no others; an option with no default in --help has prose there (off, any,
    see below), not a value."""
    shown, documented = help_options(Options().getUsage(width=100)), readme_options()
    assert sorted(documented) == sorted(shown)
    for name, (short, default) in shown.items():
        readme_short, cell = documented[name]
        assert readme_short == short, name
        if default is None:
            assert not re.fullmatch(r"`[^`]*`", cell), f"--{name}: README gives {cell}"
        else:
            assert cell == f"`{default}`", f"--{name}: --help says {default}, README {cell}"
