"""The dashboard's artifacts table at scale, in process: Older/Newer links by cursor
(withcache.web.paging), a common search's count, a short search's window, and actions that
return to the page they came from."""

from __future__ import annotations

import re
from html import unescape

import pytest_twisted

from withcache import catalog as cat
from withcache import listing

ensure = pytest_twisted.ensureDeferred
ROW = re.compile(r'<tr class="artifact">\s*<td class="url">([^<]*)<')


def rows(body: str) -> list[str]:
    return [unescape(u) for u in ROW.findall(body)]


def link(body: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]*)" rel="{rel}">', body)
    return unescape(found.group(1)) if found else None


async def fill(web, count: int, name=lambda n: f"https://bulk.example/item-{n:03d}.bin"):
    rows = [
        cat.Artifact(name(n), name(n), "c" * 64, 512, None, 1000.0 + n // 2) for n in range(count)
    ]
    await web.catalog.run(lambda conn: [cat.put_artifact(conn, row) for row in rows])
    everything = await web.catalog.run(cat.list_artifacts)
    return [a.url for a in everything]


@ensure
async def test_older_links_walk_every_artifact_once_and_newer_links_walk_back(web):
    client = await web.client().logged_in()
    everything = await fill(web, 130)
    pages, path = [], "/"
    while path:
        body = (await client.get(path)).body
        pages.append((path, rows(body)))
        assert f"130 artifacts · page {len(pages)} of 3" in body
        path = link(body, "next")
        assert path is None or "after=" in path  # by cursor, not by offset
    assert [u for _, shown in pages for u in shown] == everything
    body = (await client.get(link((await client.get(pages[2][0])).body, "prev"))).body
    assert rows(body) == pages[1][1] and "page 2 of 3" in body
    newest = link(body, "prev")
    assert newest == "/" and rows((await client.get(newest)).body) == pages[0][1]


@ensure
async def test_a_common_search_says_more_than_the_cap_and_still_pages(web, monkeypatch):
    monkeypatch.setattr(listing, "COUNT_CAP", 20)
    client = await web.client().logged_in()
    everything = await fill(web, 120)
    body = (await client.get("/?q=bulk.example/item")).body
    assert "more than 20 matches · page 1<" in body
    second = (await client.get(link(body, "next"))).body
    assert rows(body) + rows(second) == everything[:100]


@ensure
async def test_a_two_character_search_says_it_looked_at_the_newest_artifacts(web):
    client = await web.client().logged_in()
    await fill(web, 3)
    body = (await client.get("/?q=02")).body
    assert rows(body) == ["https://bulk.example/item-002.bin"]
    assert "looks at the newest 10000 artifacts only" in body


@ensure
async def test_pinning_on_a_page_reached_by_cursor_returns_to_that_page(web):
    client = await web.client().logged_in()
    everything = await fill(web, 70)
    older = link((await client.get("/")).body, "next")
    body = (await client.get(older)).body
    reply = await client.post(
        "/admin/artifacts/pin", {"key": everything[60], "pinned": "1", **_back_fields(body)}
    )
    assert reply.status == 303
    back = (await client.get(reply.headers["Location"])).body
    assert rows(back) == everything[50:] and "pinned" in back


def _back_fields(body: str) -> dict[str, str]:
    """The hidden q/page/after fields the page's action forms carry back."""
    form = body[body.index('action="/admin/artifacts/pin"') :].split("</form>")[0]
    fields = dict(re.findall(r'name="(q|page|after|before)" value="([^"]*)"', form))
    assert "after" in fields
    return {k: unescape(v) for k, v in fields.items()}


@ensure
async def test_a_page_number_too_deep_to_jump_to_shows_the_first_page(web, monkeypatch):
    monkeypatch.setattr(listing, "MAX_OFFSET", 60)
    client = await web.client().logged_in()
    everything = await fill(web, 300)
    last = (await client.get("/?page=6")).body  # 250 rows before it, 0 after: from the end
    assert rows(last) == everything[250:] and "page 6 of 6" in last
    middle = (await client.get("/?page=3")).body  # 100 rows before, 150 after
    assert rows(middle) == everything[:50] and "page 1 of 6" in middle


@ensure
async def test_the_api_answers_a_too_deep_offset_with_a_problem_naming_the_cursor(web, monkeypatch):
    monkeypatch.setattr(listing, "MAX_OFFSET", 60)
    client = await web.client().logged_in()
    await fill(web, 300)
    reply = await client.get("/api/v1/artifacts?offset=120")
    assert reply.status == 400
    assert "invalid-parameter" in reply.body and "after=" in reply.body
    assert (await client.get("/api/v1/artifacts?offset=240")).status == 200
