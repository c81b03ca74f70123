""".containerignore / .dockerignore: what the image build's context leaves out (issue 21).

The build context is the repository root (deploy/compose.yml, the Containerfile's comment). A
newcomer's clone holds `.venv/`, `./dev serve`'s `data/` (possibly many GB of blobs and a
`cache.db` of signed URLs) and build outputs; none of them may reach the engine. The matcher
below follows the ignore-file rules the patterns here use (`*`, `?`, `**`, a pattern excluding
a directory excludes what is under it; no `!` exceptions, which the test refuses).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.deploy.test_container_recipe import _copies

REPO = Path(__file__).resolve().parents[2]
CONTAINERIGNORE = REPO / ".containerignore"
DOCKERIGNORE = REPO / ".dockerignore"


def patterns(text: str) -> list[re.Pattern[str]]:
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("!"), f"{line}: exceptions are not read here"
        pattern = line.strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        out.append(re.compile(regex))
    return out


def ignored(path: str, rules: list[re.Pattern[str]]) -> bool:
    """A path is left out when it, or a directory it is in, matches a pattern."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    return any(rule.fullmatch(prefix) for rule in rules for prefix in prefixes)


RULES = patterns(CONTAINERIGNORE.read_text())


def test_podman_and_docker_read_the_same_rules():
    assert DOCKERIGNORE.read_text() == CONTAINERIGNORE.read_text()


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "data/cache.db",
        "data/blobs/ab/cdef",
        "dist/withcache_lab-0.3.0-py3-none-any.whl",
        "build/lib/withcache/__init__.py",
        "withcache_lab.egg-info/PKG-INFO",
        "withcache/__pycache__/cache.cpython-311.pyc",
        "twisted/plugins/dropin.cache",
        "shim-native/zig-out/bin/curlwithcache",
        "shim-native/.zig-cache/o/x",
        ".git/config",
        ".env",
        "deploy/.env",
        "_trial_temp/test.log",
    ],
)
def test_the_build_context_leaves_out(path):
    assert ignored(path, RULES), path


def test_the_build_context_keeps_everything_the_image_copies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    sources = [source for source, _ in _copies()]
    files = [
        path.relative_to(REPO).as_posix()
        for source in sources
        for path in ([REPO / source] if (REPO / source).is_file() else (REPO / source).rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.name != "dropin.cache"
    ]
    assert project["project"]["readme"] in files and "pyproject.toml" in files
    assert "twisted/plugins/withcache_plugin.py" in files
    assert [f for f in files if ignored(f, RULES)] == []


def test_the_matcher_follows_the_rules():
    rules = patterns("data\n**/*.pyc\nshim-native/zig-out\n")
    assert ignored("data/x", rules) and not ignored("withcache/data.py", rules)
    assert ignored("a/b/c.pyc", rules) and ignored("c.pyc", rules)
    assert ignored("shim-native/zig-out/bin/x", rules) and not ignored("shim-native/src/x", rules)
