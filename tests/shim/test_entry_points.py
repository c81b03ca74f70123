"""The shim as a program: exec of the real tool, exit 127, `python -m`, `--plan`, start-up cost.

These run the shim in a subprocess against fake real tools (shell scripts that log how they
were called), so they need no cache-host.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHIMSRC, clean_env, make_tool, run_shim, shim_command
from withcache_shim.urls import cache_url

URL = "https://vendor.example/dl/a.tar"


def logging_tool(directory: Path, name: str, probe_exit: int = 22, exit_code: int = 42) -> Path:
    """A fake real tool: a probe run (curl's -I / wget's --spider) is logged to probes.log and
    exits `probe_exit`; a real run logs its pid, argv[0] and arguments, and exits `exit_code`."""
    log = directory / f"{name}.log"
    return make_tool(
        directory,
        name,
        f"""case " $* " in
  *" -I "*|*" --spider "*) echo "$*" >> {directory}/probes.log; exit {probe_exit};;
esac
{{ echo "$$"; echo "$0"; for a in "$@"; do echo "arg:$a"; done; }} > {log}
exit {exit_code}""",
    )


def ran(directory: Path, name: str) -> tuple[int, str, list[str]]:
    lines = (directory / f"{name}.log").read_text().splitlines()
    return int(lines[0]), lines[1], [a.removeprefix("arg:") for a in lines[2:]]


def probes(directory: Path) -> list[str]:
    log = directory / "probes.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_without_a_server_the_real_tool_replaces_the_shim_with_untouched_args(
    tmp_path, tool
) -> None:
    real = logging_tool(tmp_path / "bin", tool)
    args = ["-o", "x y", "--frobnicate", URL, "", "--", "-"]
    proc = subprocess.Popen(
        [*shim_command(tool), *args], env=clean_env(PATH=f"{tmp_path / 'bin'}:/usr/bin:/bin")
    )
    assert proc.wait(timeout=60) == 42  # the real tool's own exit status
    pid, argv0, seen = ran(tmp_path / "bin", tool)
    assert pid == proc.pid  # exec'd in place: no extra process in between
    assert argv0 == str(real)
    assert seen == args
    assert probes(tmp_path / "bin") == []


def test_with_an_https_server_the_real_tool_probes_a_hit_rewrites_and_a_miss_does_not(
    tmp_path,
) -> None:
    bin_dir = tmp_path / "bin"
    server = "https://c.lab:9"
    for probe_exit, expected in ((0, cache_url(server, URL)), (22, URL)):
        logging_tool(bin_dir, "curl", probe_exit=probe_exit)
        (bin_dir / "probes.log").unlink(missing_ok=True)
        env = clean_env(PATH=f"{bin_dir}:/usr/bin:/bin", WITHCACHE_SERVER=server)
        done = run_shim("curl", ["-fsSLO", URL], env)
        assert done.returncode == 42
        assert ran(bin_dir, "curl")[2] == ["-fsSLO", expected]
        assert probes(bin_dir) == [f"-fsS -I --max-time 3 -o /dev/null {cache_url(server, URL)}"]


def test_real_wget_override(tmp_path) -> None:
    pinned = logging_tool(tmp_path / "opt", "wget-1.21")
    logging_tool(tmp_path / "bin", "wget", exit_code=1)
    env = clean_env(PATH=f"{tmp_path / 'bin'}:/usr/bin:/bin", REAL_WGET=str(pinned))
    assert run_shim("wget", ["-q", URL], env).returncode == 42
    assert ran(tmp_path / "opt", "wget-1.21")[1:] == (str(pinned), ["-q", URL])


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_no_real_tool_exits_127_with_one_line(tmp_path, tool) -> None:
    (tmp_path / "empty").mkdir()
    done = run_shim(tool, [URL], clean_env(PATH=str(tmp_path / "empty")))
    assert done.returncode == 127
    assert done.stdout == b""
    assert done.stderr.decode().count("\n") == 1
    assert f"no real {tool}" in done.stderr.decode()


def test_a_curl_symlink_to_the_console_script_finds_the_real_curl(tmp_path) -> None:
    script = Path(sys.executable).parent / "curlwithcache"
    if not script.exists():
        pytest.skip("console script not installed (pip install -e .)")
    links = tmp_path / "links"
    links.mkdir()
    (links / "curl").symlink_to(script)
    logging_tool(tmp_path / "bin", "curl")
    env = clean_env(PATH=f"{links}:{tmp_path / 'bin'}:/usr/bin:/bin")
    # Run by name, as a user's shell or script would.
    done = subprocess.run(["curl", "-s", URL], env=env, capture_output=True, timeout=60)
    assert done.returncode == 42, done.stderr
    assert ran(tmp_path / "bin", "curl")[1:] == (str(tmp_path / "bin" / "curl"), ["-s", URL])


def test_module_without_a_tool_prints_usage() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "withcache_shim"], env=clean_env(), capture_output=True
    )
    assert done.returncode == 2
    assert b"usage" in done.stderr


def test_plan_mode_prints_json_with_probe_answers_from_the_environment(tmp_path) -> None:
    make_tool(tmp_path / "bin", "curl")
    env = clean_env(
        PATH=str(tmp_path / "bin"),
        WITHCACHE_SERVER="c.lab:9",
        WITHCACHE_SHIM_PROBES="miss,hit",
    )
    other = "https://vendor.example/dl/b.tar"
    done = subprocess.run(
        [sys.executable, "-m", "withcache_shim", "--plan", "curl", "-O", URL, "-O", other],
        env=env,
        capture_output=True,
        check=True,
    )
    real = str(tmp_path / "bin" / "curl")
    assert json.loads(done.stdout) == {
        "real": real,
        "argv": [real, "-O", URL, "-O", cache_url("http://c.lab:9", other)],
        "reason": None,
        "probes": [
            {"url": URL, "cache_url": cache_url("http://c.lab:9", URL), "result": "miss"},
            {"url": other, "cache_url": cache_url("http://c.lab:9", other), "result": "hit"},
        ],
    }


def test_runs_from_a_copied_directory_with_the_standard_library_only(tmp_path) -> None:
    shutil.copytree(SHIMSRC / "withcache_shim", tmp_path / "withcache_shim")
    logging_tool(tmp_path / "bin", "wget")
    # -S: no site-packages at all (no .pth, no venv packages); -E: no PYTHONPATH.
    done = subprocess.run(
        [sys.executable, "-S", "-E", "-m", "withcache_shim", "wget", "-q", URL],
        env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 42, done.stderr
    assert ran(tmp_path / "bin", "wget")[2] == ["-q", URL]


def test_start_up_imports_nothing_heavy(tmp_path) -> None:
    """From main() to execv only the shim's own modules, binascii and _socket (the C module
    under `socket`, for the in-process probe) may be loaded."""
    make_tool(tmp_path / "bin", "curl")
    code = """
import sys
before = set(sys.modules)
from withcache_shim.__main__ import explain
from withcache_shim.probe import probe
explain("curl", ["curlwithcache", "-fsSLO", "https://v.example/a.tar"], {
    "PATH": sys.argv[1], "WITHCACHE_SERVER": "c.lab:9"}, lambda *a: "hit")
print(" ".join(sorted(set(sys.modules) - before)))
"""
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "bin")],
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(done.stdout.split())
    extra = {m for m in loaded if not m.startswith("withcache_shim")} - {"binascii", "_socket"}
    assert extra == set()
    assert "withcache_shim.rules" in loaded  # the decision code did run
