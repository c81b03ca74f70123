"""The operator UI in real headless Chromium (Debian's, never a downloaded one), via Playwright."""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.support import assert_clean_log, write_file
from tests.ui.ui_support import PASSWORD, TIMEOUT_MS, start_ui_host

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def web_host(tmp_path_factory):
    data = tmp_path_factory.mktemp("browser") / "data"
    running = start_ui_host(data, "--curate", "--allow-private", "--max-bytes", "2G")
    yield running
    running.stop()
    assert_clean_log(running)


@pytest.fixture
def page(browser, web_host):
    """A logged-in page on a fresh browser context; fails the test on any console error
    (a Content-Security-Policy violation shows up as one)."""
    from playwright.sync_api import expect

    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    # An inline validation error is a 400 by design; anything else logged as an error is not.
    expected = "the server responded with a status of 400"
    tab.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and expected not in m.text else None,
    )
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(web_host.url + "/")
    expect(tab).to_have_url(re.compile(r"/login$"))
    tab.get_by_label("Password").fill(PASSWORD)
    tab.get_by_role("button", name="Log in").click()
    expect(tab.get_by_role("heading", name="Downloads")).to_be_visible()
    yield tab
    context.close()
    assert errors == []


def job_row(page, name: str):
    return page.locator("#downloads tr.job", has_text=name)


def test_add_a_uri_and_watch_it_reach_100_percent(page, ui_origin):
    from playwright.sync_api import expect

    page.evaluate("window.notReloaded = true")
    url = f"{ui_origin.base}/f/3000000/8/browser-add.bin?rate=1500000"
    page.get_by_label("Origin URL").fill(url)
    page.locator("#add").get_by_role("button", name="Download").click()
    row = job_row(page, "browser-add.bin")
    expect(row.locator("progress")).to_be_visible()
    expect(row.locator(".percent")).to_have_text("100 %")
    expect(row.locator(".state")).to_have_text("completed")
    expect(page.locator("#artifacts tr.artifact", has_text="browser-add.bin")).to_be_visible()
    assert page.evaluate("window.notReloaded") is True  # htmx swapped sections, no reload


def test_a_bad_uri_is_reported_inline(page):
    from playwright.sync_api import expect

    page.get_by_label("Origin URL").fill("ftp://vendor.example/a.iso")
    page.locator("#add").get_by_role("button", name="Download").click()
    expect(page.locator("#add-error")).to_contain_text("only http and https")


def test_cancel_a_slow_download(page, ui_origin):
    from playwright.sync_api import expect

    url = f"{ui_origin.base}/f/80000000/9/browser-slow.bin?rate=300000"
    page.get_by_label("Origin URL").fill(url)
    page.locator("#add").get_by_role("button", name="Download").click()
    row = job_row(page, "browser-slow.bin")
    expect(row).to_contain_text("/s · ETA")  # bytes are flowing
    row.get_by_role("button", name="Cancel").click()
    expect(row.locator(".state")).to_have_text("cancelled")


def test_dismiss_a_miss_in_curate_mode(page, web_host):
    from playwright.sync_api import expect

    missed = "https://vendor.example/browser-miss.run"
    status, _ = web_host.get("/blob?" + urllib.parse.urlencode({"url": missed}))
    assert status == 404
    row = page.locator("#misses tr.miss", has_text="browser-miss.run")
    expect(row).to_be_visible()  # the misses section polls
    row.get_by_role("button", name="Dismiss").click()
    expect(row).to_have_count(0)


def test_polling_keeps_a_text_selection(page, web_host, tmp_path):
    from playwright.sync_api import expect

    web_host.seed("https://vendor.example/selectable.run", write_file(tmp_path / "s", 1000, 11))
    page.reload()
    cell = page.locator("#artifacts td.url", has_text="selectable.run")
    expect(cell).to_be_visible()
    cell.select_text()
    page.wait_for_timeout(6000)  # longer than the artifact table's poll
    assert "selectable.run" in page.evaluate("document.getSelection().toString()")


def test_copy_button_copies_the_digest(page, web_host, tmp_path):
    from playwright.sync_api import expect

    digest = web_host.seed("https://vendor.example/copied.run", write_file(tmp_path / "c", 999, 14))
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=web_host.url)
    page.reload()
    row = page.locator("#artifacts tr.artifact", has_text="copied.run")
    row.get_by_role("button", name="Copy", exact=True).click()
    expect(row.get_by_role("button", name="Copied", exact=True)).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == digest


def test_delete_asks_for_confirmation(page, web_host, tmp_path):
    from playwright.sync_api import expect

    web_host.seed("https://vendor.example/doomed.run", write_file(tmp_path / "d", 555, 16))
    page.reload()
    row = page.locator("#artifacts tr.artifact", has_text="doomed.run")
    asked: list[str] = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    row.get_by_role("button", name="Delete").click()
    expect(row).to_be_visible()
    page.once("dialog", lambda d: (asked.append(d.message), d.accept()))
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    assert len(asked) == 2 and "doomed.run" in asked[0]


def test_without_javascript_forms_still_work(browser, web_host, tmp_path):
    from playwright.sync_api import expect

    url = "https://vendor.example/nojs.run"
    web_host.seed(url, write_file(tmp_path / "n", 777, 15))
    context = browser.new_context(java_script_enabled=False)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(web_host.url + "/login")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        row = page.locator("#artifacts tr.artifact", has_text="nojs.run")
        row.get_by_role("button", name="Pin").click()
        expect(row.get_by_role("button", name="Unpin")).to_be_visible()
        row.get_by_role("button", name="Delete").click()  # a confirmation page, then a POST
        expect(page.get_by_role("heading", name="Delete this artifact?")).to_be_visible()
        page.get_by_role("button", name="Delete").click()
        expect(page.locator("#artifacts tr.artifact", has_text="nojs.run")).to_have_count(0)
    finally:
        context.close()


def test_log_out(page, web_host):
    from playwright.sync_api import expect

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto(web_host.url + "/")
    expect(page).to_have_url(re.compile(r"/login$"))


def test_dashboard_screenshot(page, web_host, ui_origin, tmp_path):
    """A screenshot with real data; WITHCACHE_SCREENSHOT=docs/img/dashboard.png keeps it."""
    from playwright.sync_api import expect

    for n, (name, size) in enumerate(
        [("cuda_12.4.0_550.54.14_linux.run", 900_000), ("doca-host_2.7.0.deb", 400_000)]
    ):
        url = f"https://developer.download.nvidia.com/compute/{name}"
        web_host.seed(url, write_file(tmp_path / name, size, 20 + n))
        for _ in range(n + 2):
            assert web_host.get("/blob?" + urllib.parse.urlencode({"url": url}))[0] == 200
    web_host.get("/blob?" + urllib.parse.urlencode({"url": "https://repo.radeon.com/rocm.tar"}))
    page.set_viewport_size({"width": 1600, "height": 1000})
    page.reload()
    page.get_by_label("Origin URL").fill(f"{ui_origin.base}/f/90000000/12/firmware.bin?rate=600000")
    page.locator("#add").get_by_role("button", name="Download").click()
    expect(job_row(page, "firmware.bin")).to_contain_text("/s · ETA")
    expect(page.locator("#stats")).to_contain_text("1 running")
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("WITHCACHE_SCREENSHOT")
    if keep:
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, keep)
    job_row(page, "firmware.bin").get_by_role("button", name="Cancel").click()
    expect(job_row(page, "firmware.bin").locator(".state")).to_have_text("cancelled")


@pytest.mark.parametrize("width", [390, 800, 1300, 1400, 1920])
def test_the_page_keeps_side_margins_at_every_width(page, width):
    """Issue 21's polish: the content touched the window's edges between 1280 and ~1450 px."""
    page.set_viewport_size({"width": width, "height": 900})
    page.reload()
    for part in ("header.container", "main.container"):
        box = page.locator(part).bounding_box()
        content_left = box["x"] + float(
            page.locator(part).evaluate("e => parseFloat(getComputedStyle(e).paddingLeft)")
        )
        content_right = (
            box["x"]
            + box["width"]
            - float(
                page.locator(part).evaluate("e => parseFloat(getComputedStyle(e).paddingRight)")
            )
        )
        assert content_left >= 8 and width - content_right >= 8, (part, width, box)


def test_an_artifacts_freshness_and_validators_show_and_refresh_now_revalidates(page, ui_origin):
    from playwright.sync_api import expect

    url = f"{ui_origin.base}/f/4000/21/fresh-ui.bin?cc=max-age%3D1"
    page.get_by_label("Origin URL").fill(url)
    page.locator("#add").get_by_role("button", name="Download").click()
    expect(job_row(page, "fresh-ui.bin").locator(".state")).to_have_text("completed")
    row = page.locator("#artifacts tr.artifact", has_text="fresh-ui.bin")
    expect(row.locator(".validators")).to_contain_text('ETag "4000-21"')
    expect(row.locator(".validators")).to_contain_text("Last-Modified Mon, 01 Jan 2024")
    expect(row.locator(".freshness")).to_contain_text("stale since", timeout=10_000)
    before = origin_stats(ui_origin)["not_modified"]
    with page.expect_response(lambda r: r.url.endswith("/admin/artifacts/refresh")):
        row.get_by_role("button", name="Refresh now").click()
    assert origin_stats(ui_origin)["not_modified"] == before + 1  # a 304, no body


def origin_stats(origin) -> dict:
    with urllib.request.urlopen(f"{origin.base}/_stats", timeout=10) as r:
        return json.loads(r.read())
