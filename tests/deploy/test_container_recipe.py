"""deploy/Containerfile, checked without a container engine (none runs on our machines).

The structural tests read the recipe; the replay tests do what the image build does — the COPY
steps into a scratch /src, the install RUN step with its pip and python — in a fresh virtualenv,
make it read-only, and start the ENTRYPOINT and run the HEALTHCHECK command against it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO / "deploy" / "Containerfile"
PLUGIN_CACHE_CMD = (
    'python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"'
)
LISTENING = "withcache listening on 127.0.0.1:"
UNWRITABLE_CACHE = "Unable to write to plugin cache"
SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|API_?KEY", re.IGNORECASE)


# -- reading a Containerfile ----------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue  # comment lines are dropped even inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        keyword, _, args = whole.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "the Containerfile ends in a line continuation"
    return out


def args_of(steps: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in steps if kw == keyword]


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"not in exec (JSON) form: {args}"
    argv = json.loads(args)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), args
    return argv


def env_of(steps: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in args_of(steps, "ENV"):
        words = shlex.split(args)
        if "=" not in words[0]:  # legacy `ENV KEY value`
            env[words[0]] = args.partition(" ")[2].strip()
            continue
        for word in words:
            key, eq, value = word.partition("=")
            assert eq, f"ENV {args!r}: {word!r} is not KEY=value"
            env[key] = value
    return env


def entrypoint_argv(steps: list[tuple[str, str]]) -> list[str]:
    """What the container runs with no run arguments: ENTRYPOINT followed by CMD."""
    entrypoints = args_of(steps, "ENTRYPOINT")
    cmds = args_of(steps, "CMD")
    assert entrypoints, "no ENTRYPOINT"
    return exec_form(entrypoints[-1]) + (exec_form(cmds[-1]) if cmds else [])


def healthcheck_command(steps: list[tuple[str, str]]) -> tuple[list[str], str]:
    """The HEALTHCHECK's options and its command, as a shell command line."""
    checks = args_of(steps, "HEALTHCHECK")
    assert len(checks) == 1, f"expected one HEALTHCHECK, found {checks}"
    options, sep, command = checks[0].partition(" CMD ")
    assert sep, f"HEALTHCHECK without CMD: {checks[0]}"
    command = command.strip()
    if command.startswith("["):
        command = shlex.join(exec_form(command))
    return options.split(), command


def baked_in_secrets(steps: list[tuple[str, str]]) -> list[str]:
    """ENV/ARG names or values that look like credentials, and COPYs of the whole context."""
    found = []
    for keyword, args in steps:
        if keyword in ("ENV", "ARG") and SECRET_WORDS.search(args):
            found.append(f"{keyword} {args}")
        if keyword in ("COPY", "ADD"):
            sources = [w for w in shlex.split(args) if not w.startswith("--")][:-1]
            for source in sources:
                name = source.rstrip("/")
                if name in (".", "", "data") or "netrc" in name or name.startswith(".env"):
                    found.append(f"{keyword} {args} (copies {source!r} into the image)")
    return found


STEPS = instructions(CONTAINERFILE.read_text())


# -- structure -----------------------------------------------------------------------------------


def test_slim_python_base():
    bases = args_of(STEPS, "FROM")
    assert len(bases) == 1, bases
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", bases[0].split()[0]), bases[0]


def test_runs_as_a_fixed_non_root_user_that_owns_data():
    users = args_of(STEPS, "USER")
    assert users, "no USER: the container would run as root"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so runtimes (Kubernetes' runAsNonRoot) can tell it is not root without /etc/passwd.
    assert uid.isdigit() and int(uid) >= 1000, f"USER {users[-1]}: want a fixed numeric UID"
    assert not gid or (gid.isdigit() and int(gid) != 0), f"USER {users[-1]}: root group"
    runs = " ".join(args_of(STEPS, "RUN"))
    assert re.search(rf"useradd\b[^&;]*--uid[= ]{uid}\b", runs), f"no useradd --uid {uid}"
    assert re.search(r"chown\s+\S+\s+/data\b", runs), "/data is not chowned to the user"
    last_user = max(i for i, (kw, _) in enumerate(STEPS) if kw == "USER")
    assert all(kw != "RUN" for kw, _ in STEPS[last_user:]), "a RUN after USER would need root"


def test_data_volume_port_and_healthcheck():
    volumes = [v for args in args_of(STEPS, "VOLUME") for v in _words(args)]
    assert "/data" in volumes, volumes
    ports = [p for args in args_of(STEPS, "EXPOSE") for p in args.split()]
    assert "3000" in ports or "3000/tcp" in ports, ports
    options, command = healthcheck_command(STEPS)
    assert "http://127.0.0.1:3000/healthz" in command, command
    assert "curl" not in command and "wget" not in command, "slim images have neither"
    assert any(o.startswith("--timeout=") for o in options), options
    assert env_of(STEPS).get("PYTHONUNBUFFERED") == "1"


def test_entrypoint_is_twistd_withcache_on_data_and_port_3000():
    argv = entrypoint_argv(STEPS)
    assert argv[:4] == ["twistd", "-n", "--pidfile=", "withcache"], argv
    assert _option(argv, "--data-dir") == "/data", argv
    assert _option(argv, "--listen") == "tcp:3000", argv


def test_install_step_builds_the_plugin_cache_after_pip_install():
    [install] = _install_steps()
    assert "--no-cache-dir" in install, install
    pip_at, cache_at = install.index("pip install"), install.find(PLUGIN_CACHE_CMD)
    assert cache_at > pip_at, f"the install step does not run {PLUGIN_CACHE_CMD} after pip"


def test_copies_everything_the_wheel_is_built_from():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = ["pyproject.toml", project["project"]["readme"]]
    needed += project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = [source for source, _ in _copies()]
    for path in needed:
        assert any(path == c or path.startswith(c + "/") for c in copied), (path, copied)


def test_no_secrets_baked_in():
    assert baked_in_secrets(STEPS) == []


@pytest.mark.parametrize(
    "line",
    [
        "ENV WITHCACHE_ADMIN_PASSWORD=hunter2",
        "ARG GITHUB_TOKEN",
        "ENV A=1 \\\n    API_KEY=abc",
        "ENV DB_SECRET s3cret",
        "COPY . /src",
        "COPY data/netrc /data/netrc",
    ],
)
def test_the_secret_check_catches(line):
    assert baked_in_secrets(instructions(f"FROM python:3.11-slim\n{line}\n"))


# -- replay ---------------------------------------------------------------------------------------


@dataclass
class Image:
    root: Path  # stands for the image's /
    venv: Path  # where the image's pip and python put things
    env: dict[str, str]
    argv: list[str]  # ENTRYPOINT + CMD, with twistd from the venv
    workdir: str

    @property
    def plugins(self) -> Path:
        [site] = (self.venv / "lib").glob("python3*/site-packages")
        return site / "twisted" / "plugins"


@pytest.fixture(scope="module")
def image():
    """The Containerfile's COPY and install RUN steps, replayed into a fresh virtualenv."""
    root = Path(tempfile.mkdtemp(prefix="withcache-image-"))
    try:
        for source, dest in _copies():
            _copy(REPO / source, root, dest)
        venv = root / "venv"
        subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, capture_output=True
        )
        env = _clean_env() | env_of(STEPS)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
        for step in _install_steps():
            # /bin/sh -c, as a shell-form RUN; pip and python are the venv's through PATH.
            step = re.sub(r"(?<![\w./-])/src(?=[/\s]|$)", str(root / "src"), step)
            out = subprocess.run(
                ["/bin/sh", "-c", step], env=env, capture_output=True, text=True, timeout=900
            )
            assert out.returncode == 0, f"RUN {step}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        argv = entrypoint_argv(STEPS)
        argv[0] = str(venv / "bin" / argv[0])
        workdirs = args_of(STEPS, "WORKDIR")
        _make_read_only(venv)
        yield Image(root, venv, env, argv, workdirs[-1] if workdirs else "/")
    finally:
        _make_writable(root)
        shutil.rmtree(root)


def test_image_serves_healthz_from_a_read_only_install(image, tmp_path):
    cache = image.plugins / "dropin.cache"
    assert cache.is_file(), "the install step left no Twisted plugin cache"
    before = _snapshot(image.plugins)
    data = tmp_path / "data"
    data.mkdir()
    # Options given to `run IMAGE ...` are appended to the entry point.
    proc, log, port = _start(image, data, tmp_path / "twistd.log", "--curate")
    try:
        assert "curate=True" in log, log
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "application/json"
            assert json.loads(r.read())["status"] == "ok"
        assert _healthcheck(image, port).returncode == 0
        assert (data / "cache.db").exists(), "the host keeps its state in the data volume"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    log = (tmp_path / "twistd.log").read_text(errors="replace")
    # Twisted re-raises SIGTERM once it has shut down, so the status says "killed by SIGTERM"
    # (which systemd and container runtimes take as a clean stop).
    assert code in (0, -signal.SIGTERM), f"twistd exited {code} on SIGTERM:\n{log[-4000:]}"
    assert "Server Shut Down." in log, log[-4000:]
    assert UNWRITABLE_CACHE not in log, log[-4000:]
    for bad in ("Traceback", "Unhandled Error"):
        assert bad not in log, log[max(0, log.find(bad) - 1000) :][:6000]
    # Root ignores the read-only modes, so also check that nothing in twisted/plugins changed.
    assert _snapshot(image.plugins) == before, "twistd rewrote its plugin cache at start"
    assert _healthcheck(image, port).returncode != 0, "the health check passes with no server"


def test_without_the_prebuilt_plugin_cache_twistd_would_write_one(image, tmp_path):
    """The check above can fail: with no dropin.cache, a start writes (or tries to write) one."""
    cache = image.plugins / "dropin.cache"
    aside = image.root / "dropin.cache.aside"
    _make_writable(image.plugins)
    cache.rename(aside)
    _make_read_only(image.plugins)
    try:
        data = tmp_path / "data"
        data.mkdir()
        proc, _, _ = _start(image, data, tmp_path / "twistd.log")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log = (tmp_path / "twistd.log").read_text(errors="replace")
        assert UNWRITABLE_CACHE in log or cache.exists(), log[-4000:]
    finally:
        _make_writable(image.plugins)
        cache.unlink(missing_ok=True)
        aside.rename(cache)
        _make_read_only(image.plugins)


# -- helpers --------------------------------------------------------------------------------------


def _words(args: str) -> list[str]:
    return exec_form(args) if args.startswith("[") else args.split()


def _option(argv: list[str], name: str) -> str | None:
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def _copies() -> list[tuple[str, str]]:
    """(source relative to the build context, destination) per COPY; only plain forms."""
    pairs = []
    for keyword, args in STEPS:
        assert keyword != "ADD", "use COPY"
        if keyword != "COPY":
            continue
        words = _words(args)
        assert not any(w.startswith("--from") for w in words), "multi-stage COPY: replay it"
        paths = [w for w in words if not w.startswith("--")]
        *sources, dest = paths
        assert len(sources) == 1 or dest.endswith("/"), f"COPY {args}: several into a file"
        for source in sources:
            assert not set(source) & set("*?["), f"COPY {args}: no wildcards, please"
            pairs.append((source.rstrip("/"), dest))
    assert pairs, "no COPY steps"
    return pairs


def _copy(source: Path, root: Path, dest: str) -> None:
    """COPY's rules: a directory's contents go into dest; a file goes into dest/ or to dest."""
    assert source.exists(), f"COPY source {source} does not exist"
    target = root / dest.lstrip("/")
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True, symlinks=True)
    elif dest.endswith("/"):
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / source.name)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _install_steps() -> list[str]:
    steps = [args for args in args_of(STEPS, "RUN") if "pip install" in args]
    assert len(steps) == 1, f"expected one RUN with pip install, found {steps}"
    return steps


def _clean_env() -> dict[str, str]:
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE")
    return {k: v for k, v in os.environ.items() if k not in drop}


def _start(image: Image, data: Path, log_path: Path, *extra: str):
    argv = [str(data) if a == "/data" else a for a in image.argv]
    argv = [a.replace("tcp:3000", "tcp:0:interface=127.0.0.1") for a in argv]
    cwd = data if image.workdir == "/data" else image.root
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [*argv, *extra],
            cwd=cwd,
            env=image.env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while True:
        log = log_path.read_text(errors="replace")
        if LISTENING in log:
            return proc, log, int(log.split(LISTENING, 1)[1].split()[0])
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=30)
            raise AssertionError(f"{argv} did not start (exit {proc.returncode}):\n{log[-4000:]}")
        time.sleep(0.05)


def _healthcheck(image: Image, port: int) -> subprocess.CompletedProcess:
    _, command = healthcheck_command(STEPS)
    assert command.count("127.0.0.1:3000") == 1, command
    command = command.replace("127.0.0.1:3000", f"127.0.0.1:{port}")
    # Shell form, as the runtime runs it: /bin/sh -c, python from PATH.
    return subprocess.run(
        ["/bin/sh", "-c", command], env=image.env, capture_output=True, text=True, timeout=30
    )


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Name -> (mtime, size) of the plugin modules and the cache (bytecode aside)."""
    return {
        p.name: (p.stat().st_mtime_ns, p.stat().st_size)
        for p in directory.iterdir()
        if p.name != "__pycache__"
    }


def _make_read_only(tree: Path) -> None:
    _chmod_tree(tree, lambda mode: mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _make_writable(tree: Path) -> None:
    _chmod_tree(tree, lambda mode: mode | stat.S_IWUSR)


def _chmod_tree(tree: Path, change) -> None:
    for path in [tree, *tree.rglob("*")]:
        if not path.is_symlink():
            path.chmod(change(path.stat().st_mode))
