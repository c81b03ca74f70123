"""docs/shims.md's `--plan` recipe, run where the shims are installed as pipx installs them
(issue 21): `curlwithcache` on PATH as a link into a virtualenv of its own, and a system
`python3` that has no withcache_shim."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHIMS_MD = REPO / "docs" / "shims.md"


def plan_block() -> str:
    section = SHIMS_MD.read_text().split("## Which curl is in effect?\n", 1)[1].split("\n## ")[0]
    blocks = re.findall(r"^```sh\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    [block] = [b for b in blocks if "--plan" in b]
    return block


def test_the_plan_recipe_works_with_an_isolated_install(tmp_path):
    local_bin = tmp_path / "bin"  # stands for ~/.local/bin
    local_bin.mkdir()
    (local_bin / "curlwithcache").symlink_to(Path(sys.prefix) / "bin" / "curlwithcache")
    out = subprocess.run(
        ["env", "-i", f"PATH={local_bin}:/usr/bin:/bin", f"HOME={tmp_path}"]
        + ["WITHCACHE_SERVER=http://cache.lab:3000", "WITHCACHE_SHIM_PROBES=hit"]
        + ["bash", "-euo", "pipefail", "-c", plan_block()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["reason"] is None, plan
    assert plan["argv"][-1].startswith("http://cache.lab:3000/b/"), plan
