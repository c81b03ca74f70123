"""Issue 13, finding 1 in real Chromium: an origin's HTML served by the read path never runs as
the cache-host, so it cannot read the dashboard's CSRF token and act as a logged-in operator.

The planted page's script, were it to run, marks its run (the page title, a request to a marker
server on 127.0.0.1), reads the dashboard's CSRF token, queues a fill and deletes an artifact.
It uses synchronous XHR, so by the time the page's load event fires everything it would have
done is done: the tests check the catalog right after, without waiting for a "nothing happened".
"""

from __future__ import annotations

import re

import pytest

from tests.support import artifacts_by_key, assert_clean_log, db, start_origin, write_file
from tests.ui.ui_support import PASSWORD, TIMEOUT_MS, start_ui_host

pytestmark = pytest.mark.e2e

EVIL = "https://evil.example/release-notes.html"
VICTIM = "https://vendor.example/victim.run"

SCRIPT = """<!doctype html><meta charset="utf-8"><title>release notes</title>
<script>
document.title = "ran";
var marker = new XMLHttpRequest();
marker.open("GET", "MARKER/ran", false);
try { marker.send(); } catch (e) {}
var page = new XMLHttpRequest();
page.open("GET", "/", false);
page.send();
var csrf = /name="csrf" value="([0-9a-f]+)"/.exec(page.responseText)[1];
function post(path, body) {
  var p = new XMLHttpRequest();
  p.open("POST", path, false);
  p.setRequestHeader("Content-Type", "application/x-www-form-urlencoded");
  p.send(body + "&csrf=" + csrf);
}
post("/admin/add", "url=" + encodeURIComponent("MARKER/planted.bin"));
post("/admin/artifacts/delete", "key=" + encodeURIComponent("VICTIM"));
document.title = "done";
</script>
"""


@pytest.fixture(scope="module")
def marker():
    """A plain server on 127.0.0.1 that records every request (the script's beacon)."""
    running = start_origin()
    yield running
    running.server.shutdown()
    running.server.server_close()


@pytest.fixture(scope="module")
def xss_host(tmp_path_factory, marker):
    """A host with a password, an HTML artifact planted by an origin, and one to delete."""
    base = tmp_path_factory.mktemp("xss")
    running = start_ui_host(base / "data", "--curate", "--allow-private")
    page = base / "release-notes.html"
    page.write_text(SCRIPT.replace("MARKER", marker.url).replace("VICTIM", VICTIM))
    running.seed(EVIL, page, "--content-type", "text/html; charset=utf-8")
    running.seed(VICTIM, write_file(base / "victim.run", 4321, 7))
    yield running
    running.stop()
    assert_clean_log(running)


@pytest.fixture
def operator(browser, xss_host):
    """A page logged in to the dashboard, on a context that accepts downloads."""
    from playwright.sync_api import expect

    context = browser.new_context(accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    tab.goto(xss_host.url + "/login")
    tab.get_by_label("Password").fill(PASSWORD)
    tab.get_by_role("button", name="Log in").click()
    expect(tab.get_by_role("heading", name="Downloads")).to_be_visible()
    yield tab
    context.close()


def assert_nothing_was_done(host, marker) -> None:
    assert marker.requests == []
    assert db(host.data_dir, "SELECT url FROM jobs") == []
    assert VICTIM in artifacts_by_key(host.data_dir)


def test_following_the_dashboard_link_to_an_html_hit_runs_nothing(operator, xss_host, marker):
    """The operator clicks the artifact's cache URL: the bytes arrive as a download (served as
    application/octet-stream), exactly as stored, and nothing on the page runs."""
    row = operator.locator("#artifacts tr.artifact", has_text="release-notes.html")
    with operator.expect_download() as download:
        row.get_by_role("link", name="cache URL").click()
    saved = download.value.path()
    planted = SCRIPT.replace("MARKER", marker.url).replace("VICTIM", VICTIM).encode()
    assert saved.read_bytes() == planted
    assert operator.title() != "ran" and operator.title() != "done"
    assert_nothing_was_done(xss_host, marker)


def test_a_browser_that_renders_the_hit_as_html_still_runs_nothing(operator, xss_host, marker):
    """Were the body rendered as HTML anyway (a browser that sniffs, a type the octet-stream
    rule missed), the read path's sandbox policy still stops its script: the host's answer is
    kept whole except for its Content-Type, which becomes text/html."""
    blob = operator.locator("#artifacts tr.artifact", has_text="release-notes.html")
    url = blob.get_by_role("link", name="cache URL").get_attribute("href")
    assert url is not None

    def as_html(route):
        response = route.fetch()
        route.fulfill(response=response, headers={**response.headers, "content-type": "text/html"})

    operator.route(re.compile(r".*/b/.*"), as_html)
    blocked: list[str] = []
    operator.on("console", lambda m: blocked.append(m.text) if m.type == "error" else None)
    operator.goto(url)  # returns once the page has loaded (its sync XHRs would be done)
    assert operator.title() == "release notes"
    assert any("sandboxed" in text or "Content Security Policy" in text for text in blocked)
    assert_nothing_was_done(xss_host, marker)
