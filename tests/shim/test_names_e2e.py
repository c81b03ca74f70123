"""Name fidelity end to end: plain `wget URL` (no -O) through the shim saves the file under the
very name wget gives it from the origin (a query string, index.html, escapes), and is a hit.

Each command runs twice with the real wget: directly against the origin (no server set), and
through the shim on a warm cache, each in its own empty directory. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import os

import pytest
from conftest import clean_env, run_shim

from tests.shim_e2e_support import CACHED, FRESH

pytestmark = pytest.mark.e2e

# (the origin's path, what follows it in the URL)
URLS = [
    ("pkg/get", "?id=3&arch=x86_64"),
    ("pkg/get", "?"),
    ("pkg/get", "?path=a/b&q=a%2Fb%20c%3Fd"),
    ("pkg/file%20name.tar", "?v=1"),
    ("pkg/%C3%BC.tar", "?x=%C3%BC&y=~!*()"),
    ("pkg/f", "?x=%25&y=%zz&z=a"),
    ("pkg/", "?x=1"),
    ("pkg/", ""),
    ("pkg/f%3Fx", "?y#frag"),
]


@pytest.mark.parametrize(("path", "tail"), URLS, ids=[p + t for p, t in URLS])
def test_wget_without_o_names_the_cached_file_as_from_the_origin(
    host, origin, tmp_path, path, tail
) -> None:
    # The origin serves the path (decoded the way its handler sees it, query ignored).
    origin.files["/" + path] = FRESH
    url = origin.url + "/" + path + tail
    blob = tmp_path / "seed.bin"
    blob.write_bytes(CACHED)
    host.seed(url, blob)
    direct, shimmed = tmp_path / "direct", tmp_path / "shimmed"
    direct.mkdir()
    shimmed.mkdir()
    base = clean_env(PATH="/usr/bin:/bin", HOME=str(tmp_path))

    done = run_shim("wget", ["-q", url], base, cwd=direct)
    assert done.returncode == 0, done.stderr
    before = len(origin.requests)
    done = run_shim("wget", ["-q", url], {**base, "WITHCACHE_SERVER": host.url}, cwd=shimmed)
    assert done.returncode == 0, done.stderr

    assert os.listdir(shimmed) == os.listdir(direct) and len(os.listdir(direct)) == 1
    (name,) = os.listdir(direct)
    assert (direct / name).read_bytes() == FRESH
    assert (shimmed / name).read_bytes() == CACHED  # served by the cache
    assert len(origin.requests) == before  # the origin saw nothing of the shimmed run


def test_a_name_with_a_control_byte_passes_through_under_the_same_name(
    host, origin, tmp_path
) -> None:
    """The cache-host routes no /b/<token>/<name> whose name decodes to a control byte, so
    such a URL is left to the origin (and wget still names the file as usual)."""
    origin.files["/pkg/ctl"] = FRESH
    url = origin.url + "/pkg/ctl?z=a%0Ab"
    blob = tmp_path / "seed.bin"
    blob.write_bytes(CACHED)
    host.seed(url, blob)
    env = clean_env(PATH="/usr/bin:/bin", HOME=str(tmp_path), WITHCACHE_SERVER=host.url)
    done = run_shim("wget", ["-q", url], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ctl?z=a%0Ab").read_bytes() == FRESH
