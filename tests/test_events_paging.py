"""Pages of the audit log at a cost that does not grow with it (withcache.events.query), on each
catalog backend: counts bounded by COUNT_CAP, offsets by MAX_OFFSET, cursors for the rest, and
filters by action, action prefix and actor that walk indexes in id order."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select

from withcache import events as ev
from withcache.catalog_db import transaction
from withcache.tables import events

ACTIONS = ("fill.queued", "fill.completed", "fill.failed", "artifact.deleted", "login.failed")
ACTORS = ("host", "operator", "token:ci", "withcache-admin")


@pytest.fixture
def logged(conn) -> list[dict]:
    """300 events of mixed actions and actors, oldest first, as the rows were written; with
    an action no release writes (fill.future: a newer host's) and a near-miss of the prefix."""
    rnd = random.Random(7)
    rows = [
        {
            "at": 1000.0 + n,
            "actor": rnd.choice(ACTORS),
            "client": None,
            "action": rnd.choice((*ACTIONS, "fill.future", "fillx")),
            "subject": f"https://vendor.example.com/{n}.run",
            "outcome": ev.OK,
            "detail": None,
        }
        for n in range(300)
    ]
    with transaction(conn):
        conn.execute(events.insert(), rows)
    ids = list(conn.execute(select(events.c.id).order_by(events.c.id)).scalars())
    return [{**row, "id": i} for row, i in zip(rows, ids, strict=True)]


def matching(logged: list[dict], action: str = "", actor: str = "") -> list[int]:
    """The ids a filter selects, newest first, by reading every row."""

    def selected(row: dict) -> bool:
        if action.endswith("."):
            if not row["action"].startswith(action):
                return False
        elif action and row["action"] != action:
            return False
        return not actor or row["actor"] == actor

    return [row["id"] for row in reversed(logged) if selected(row)]


FILTERS = [
    {},
    {"action": "fill."},
    {"action": "fill.failed"},
    {"action": "artifact."},
    {"actor": "operator"},
    {"actor": "operator", "action": "fill."},
    {"actor": "withcache-admin", "action": "login.failed"},
    {"action": "nothing."},
    {"actor": "nobody"},
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(map(str, f.values())) or "all")
def test_cursor_pages_cover_every_matching_event_once_newest_first(conn, logged, filters):
    expected = matching(logged, **filters)
    seen: list[int] = []
    before = None
    while True:
        page, _total = ev.query(conn, limit=7, before=before, **filters)
        seen += [e.id for e in page]
        if len(page) < 7:
            break
        before = page[-1].id
    assert seen == expected


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(map(str, f.values())) or "all")
def test_offset_pages_are_the_same_pages_and_counts_are_exact_under_the_cap(conn, logged, filters):
    expected = matching(logged, **filters)
    for offset in (0, 1, 13, len(expected) - 3, len(expected) + 5):
        offset = max(offset, 0)
        page, total = ev.query(conn, limit=10, offset=offset, **filters)
        assert [e.id for e in page] == expected[offset : offset + 10]
        assert total == len(expected)


def test_a_prefix_matches_actions_it_names_only_and_ones_no_release_lists(conn, logged):
    page, _ = ev.query(conn, action="fill.", limit=1000)
    found = {e.action for e in page}
    assert "fill.future" in found and "fillx" not in found
    assert found <= {"fill.queued", "fill.completed", "fill.failed", "fill.future"}
    assert ev.query(conn, action="fill", limit=1000) == ([], 0)  # no prefix without its dot


def test_counts_stop_at_the_cap_and_say_so(conn, logged, monkeypatch):
    monkeypatch.setattr(ev, "COUNT_CAP", 40)
    every = matching(logged)
    page, total = ev.query(conn, limit=5)
    assert total is None and [e.id for e in page] == every[:5]
    rare = {"actor": "withcache-admin", "action": "login.failed"}
    assert ev.query(conn, limit=5, **rare)[1] == len(matching(logged, **rare)) <= 40


def test_an_offset_past_max_offset_is_refused(conn, logged, monkeypatch):
    monkeypatch.setattr(ev, "MAX_OFFSET", 100)
    assert len(ev.query(conn, limit=5, offset=100)[0]) == 5
    with pytest.raises(ev.TooDeep):
        ev.query(conn, limit=5, offset=101)


def test_withcache_admin_refuses_an_offset_past_max_offset_in_one_line(tmp_path):
    from tests.api_support import admin

    done = admin("events", "--offset", str(ev.MAX_OFFSET + 1), data_dir=tmp_path, check=False)
    assert done.returncode == 2
    assert done.stderr == (
        f"withcache-admin events: offset beyond {ev.MAX_OFFSET}; narrow with --action/--actor\n"
    )
