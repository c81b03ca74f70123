"""Fixtures of the in-process web tests (the harness lives in tests/web_support.py)."""

from __future__ import annotations

import pytest

from tests.web_support import WebHost, started


@pytest.fixture
def web(tmp_path):
    """A curating in-process host with a password (a fresh one per test)."""
    yield from started(WebHost(tmp_path / "data"))


@pytest.fixture
def web_both(tmp_path, catalog_url):
    """`web` on each catalog backend (SQLite, PostgreSQL)."""
    yield from started(WebHost(tmp_path / "data", catalog=catalog_url))
