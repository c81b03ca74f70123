"""Installing withcache: never by a name on PyPI that is someone else's (issue 21).

`withcache` on PyPI is an unrelated project, so the distribution is `withcache-lab` and every
documented install takes a path (a clone or a wheel built from one).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTION = "withcache-lab"
# Third-party tools the docs install by name on purpose (not withcache).
THIRD_PARTY = {"ziglang", "py-spy", "pipx", "pip"}
DOCUMENTS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "deploy" / "README.md",
    REPO / "deploy" / "Containerfile",
    REPO / "deploy" / "withcache.service",
    REPO / "dev",
    REPO / ".ci" / "run",
]
INSTALL = re.compile(r"\b(?:pipx|pip3?|-m pip) install\b([^`\n;&|)]*)")


def installs_by_name(text: str) -> list[str]:
    """The arguments of `pip install` / `pipx install` commands that are not paths or options."""
    found = []
    for match in INSTALL.finditer(text):
        try:
            words = shlex.split(match.group(1), comments=True)
        except ValueError:
            words = match.group(1).split()
        for word in words:
            if word.startswith("-") or word.startswith(("tests/", "$")):
                continue
            if word.startswith((".", "/", "~")) or word.endswith(".whl"):
                continue
            name = re.split(r"[=<>!~\[ ]", word, maxsplit=1)[0].lower()
            if name in THIRD_PARTY or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
                continue
            found.append(word)
    return found


def test_the_distribution_is_withcache_lab_not_the_pypi_withcache():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION
    # The package, the commands and the plugin keep their names.
    dist = importlib.metadata.distribution(DISTRIBUTION)
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert set(scripts) == {"withcache-server", "withcache-admin", "curlwithcache", "wgetwithcache"}


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_documents_install_from_a_path_never_by_name(path):
    assert installs_by_name(path.read_text()) == []


@pytest.mark.parametrize(
    "line, bad",
    [
        ("pipx install withcache          # or: pip install withcache", ["withcache"]),
        ("python3 -m pip install --user withcache-lab", ["withcache-lab"]),
        ("`pip install ./` or `pipx install ./dist/withcache_lab-1-py3-none-any.whl`", []),
        ("pip install -e '.[test]'; pip install 'ziglang==0.17.*'", []),
    ],
)
def test_the_install_check_catches(line, bad):
    assert installs_by_name(line) == bad


def test_dev_wheel_builds_a_withcache_lab_wheel_that_installs_the_commands(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["WITHCACHE_VENV"] = sys.prefix
    out = subprocess.run(
        [str(REPO / "dev"), "wheel", str(tmp_path / "dist")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    [wheel] = (tmp_path / "dist").glob("*.whl")
    assert wheel.name.startswith("withcache_lab-"), wheel.name
    # A fresh virtualenv, as on another machine; --no-deps: the shims need only the stdlib.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)]
    subprocess.run(pip, check=True, capture_output=True, timeout=300, env=env)
    shown = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert '"withcache-lab"' in shown.stdout and '"withcache"' not in shown.stdout, shown.stdout
    for command in ("curlwithcache", "wgetwithcache", "withcache-admin", "withcache-server"):
        assert (venv / "bin" / command).exists(), command
    version = subprocess.run(
        [str(venv / "bin" / "curlwithcache"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert version.returncode == 0 and version.stdout.startswith("curl "), version
