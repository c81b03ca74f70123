"""Fixtures for the operator UI tests (helpers live in ui_support.py)."""

from __future__ import annotations

import os

import pytest

from tests.support import OriginProcess, assert_clean_log
from tests.ui.ui_support import CHROMIUM, CHROMIUM_ARGS, Client, start_ui_host


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium through Playwright (a browser is never downloaded)."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: ./dev test installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        running = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield running
        running.close()


@pytest.fixture(scope="module")
def ui_origin():
    running = OriginProcess()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def ui_host(tmp_path_factory):
    """A curating host with a password that may fetch from 127.0.0.1 (the test origin)."""
    running = start_ui_host(tmp_path_factory.mktemp("ui") / "data", "--curate", "--allow-private")
    yield running
    running.stop()
    assert_clean_log(running)


@pytest.fixture
def client(ui_host) -> Client:
    """A client logged in to ui_host."""
    c = Client(ui_host.url)
    assert c.login().status == 303
    c.get("/")  # the session's CSRF token (a login starts a new session)
    return c
