"""The changelog's news fragments: well named, and towncrier can draft a release from them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support import tool

REPO = Path(__file__).resolve().parents[1]
TYPES = ("feature", "bugfix", "removal", "doc", "misc")


def fragments() -> list[Path]:
    return sorted(p for p in (REPO / "newsfragments").iterdir() if p.name != ".gitignore")


def test_each_fragment_is_named_issue_type_md():
    assert fragments(), "no news fragments"
    for path in fragments():
        assert re.fullmatch(rf"\d+\.({'|'.join(TYPES)})(\.\d+)?\.md", path.name), path.name


def test_towncrier_drafts_a_release_with_every_fragment():
    out = subprocess.run(
        [tool("towncrier"), "build", "--draft", "--version", "0.0.test"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    draft = " ".join(out.stdout.split())
    for path in fragments():
        issue = path.name.split(".")[0]
        assert f"(#{issue})" in draft, path.name
        first_words = " ".join(path.read_text().split()[:6])
        assert first_words in draft, path.name
