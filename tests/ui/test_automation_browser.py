"""The automation pages in real Chromium: the 30-day traffic chart, Tokens and Events."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.api_support import admin, call
from tests.support import assert_clean_log, db_write, eventually, write_file
from tests.ui.ui_support import PASSWORD, TIMEOUT_MS, start_ui_host

pytestmark = pytest.mark.e2e
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
GIB = 1 << 30


def day(days_ago: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400 * days_ago))


@pytest.fixture(scope="module")
def auto_host(tmp_path_factory):
    root = tmp_path_factory.mktemp("automation")
    data = root / "data"
    # The import makes and migrates cache.db before the host starts (the host migrates at its
    # first query, which may come after the rows below are written).
    admin(
        "import",
        "https://vendor.example.com/today.bin",
        str(write_file(root / "f", 300_000)),
        data_dir=data,
    )
    # A month of traffic as the host would have counted it (the chart reads the catalog).
    for n in range(1, 30):
        served = (n * 7919 % 23) * GIB // 4
        fetched = (n * 104729 % 11) * GIB // 8
        db_write(
            data,
            "INSERT INTO daily_traffic (day, served, fetched) VALUES (?, ?, ?)",
            day(n),
            served,
            fetched,
        )
    running = start_ui_host(data, "--curate")
    yield running
    running.stop()
    assert_clean_log(running)


@pytest.fixture
def page(browser, auto_host):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(auto_host.url + "/login")
    tab.get_by_label("Password").fill(PASSWORD)
    tab.get_by_role("button", name="Log in").click()
    expect(tab.get_by_role("heading", name="Downloads")).to_be_visible()
    yield tab
    context.close()
    assert errors == []  # a CSP violation (an inline style in the SVG, say) shows up here


def test_the_dashboard_draws_30_days_of_traffic_readable_without_colour(page, auto_host):
    from playwright.sync_api import expect

    # Today's bytes served: a real hit, counted by the host and flushed to the catalog.
    status, body = auto_host.get("/blob?url=https://vendor.example.com/today.bin")
    assert status == 200 and len(body) == 300_000

    def today() -> str:
        page.goto(auto_host.url + "/")
        return page.locator("rect.bar.served").last.text_content()

    # Each bar's <title> names its day and value (small beside a month of GiB: a sliver).
    shown = eventually(today, lambda t: "293.0 KiB" in t, timeout=30, what="today", every=1.0)
    assert shown == f"{day(0)}: 293.0 KiB served from the cache"
    chart = page.locator("#traffic svg.traffic")
    expect(chart).to_be_visible()
    assert chart.locator("rect.bar.served").count() == 30
    assert chart.locator("rect.bar.fetched").count() == 30
    # The two series differ in pattern, not only in colour, and the legend says which is which.
    assert chart.locator("rect.bar.fetched").first.get_attribute("fill") == "url(#hatch)"
    assert chart.locator("rect.bar.served").first.get_attribute("fill").startswith("#")
    expect(chart).to_contain_text("served from the cache")
    expect(chart).to_contain_text("fetched from origins")
    assert re.search(r"\d+(\.\d)? GiB", chart.text_content())  # the axis is labelled
    label = chart.get_attribute("aria-label")
    assert "last 30 days" in label and "served from the cache" in label
    box = chart.bounding_box()
    assert box["width"] > 600 and box["height"] > 150
    shot = page.locator("#traffic").screenshot()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("WITHCACHE_SCREENSHOT_CHART"):  # =1 refreshes docs/img/traffic-chart.png
        (DOCS_IMG / "traffic-chart.png").write_bytes(shot)


def test_a_token_made_in_the_ui_is_shown_once_works_and_is_revoked(page, auto_host):
    from playwright.sync_api import expect

    page.get_by_role("link", name="Tokens").click()
    page.get_by_label("Token name").fill("browser-made")
    page.get_by_label("fill").check()
    page.get_by_role("button", name="Create token").click()
    shown = page.get_by_test_id("new-token")
    expect(shown).to_contain_text("shown this once")
    secret = re.search(r"wct_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", shown.text_content()).group(0)
    assert call(auto_host.url, "GET", "/api/v1/stats", secret).status == 200
    page.goto(auto_host.url + "/admin/tokens")
    assert secret not in page.content()
    row = page.locator("tr.token", has_text="browser-made")
    expect(row).to_contain_text("fill")
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator("tr.token", has_text="browser-made")).not_to_contain_text("Revoke")
    assert call(auto_host.url, "GET", "/api/v1/stats", secret).status == 401


def test_the_events_page_filters_by_action_and_actor(page, auto_host):
    from playwright.sync_api import expect

    page.get_by_role("link", name="Events").click()
    expect(page.locator("tr.event").first).to_be_visible()
    page.get_by_label("Action").select_option("login.succeeded")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("tr.event")
    expect(rows.first).to_contain_text("login.succeeded")
    assert all("login.succeeded" in t for t in rows.all_text_contents())
    page.get_by_label("Action").select_option("")
    page.get_by_label("Actor").select_option("withcache-admin")
    page.get_by_role("button", name="Filter").click()
    expect(rows.first).to_contain_text("artifact.imported")
    assert all("withcache-admin" in t for t in rows.all_text_contents())


def test_the_events_page_pages_through_the_log_newest_first(page, auto_host):
    from playwright.sync_api import expect

    for n in range(120):
        db_write(
            auto_host.data_dir,
            "INSERT INTO events (at, actor, client, action, subject, outcome)"
            " VALUES (?, 'host', NULL, 'fill.completed', ?, 'ok')",
            time.time() - 3600 + n,
            f"https://vendor.example.com/paged-{n:03d}.bin",
        )
    page.goto(auto_host.url + "/admin/events?action=fill.completed")
    rows = page.locator("tr.event")
    expect(rows.first).to_contain_text("paged-119.bin")
    assert rows.count() == 50
    expect(page.locator("nav.pages")).to_contain_text("Page 1 of 3 (120 events)")
    page.get_by_role("link", name="Older").click()
    expect(rows.first).to_contain_text("paged-069.bin")
    expect(page.locator("nav.pages")).to_contain_text("Page 2 of 3")
    page.get_by_role("link", name="Older").click()
    assert rows.count() == 20
    expect(rows.last).to_contain_text("paged-000.bin")
