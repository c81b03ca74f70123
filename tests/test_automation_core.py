"""Tokens, the audit log, daily traffic and the chart, in process on each catalog backend."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from sqlalchemy.exc import DBAPIError

from withcache import events as ev
from withcache import tokens
from withcache.traffic import add_traffic, day_of, last_days
from withcache.web.chart import traffic_svg

DAY = 86400.0
NOW = 1_790_000_000.0


def test_a_token_checks_only_as_its_whole_string_and_records_its_use(conn):
    made, secret = tokens.create_token(conn, "ci", ["fill"], NOW)
    assert made.scopes == ("fill",) and secret.startswith("wct_")
    assert tokens.check_token(conn, secret, NOW + 1).name == "ci"
    assert tokens.list_tokens(conn)[0].last_used_at == NOW + 1
    assert tokens.check_token(conn, secret[:-1] + ("A" if secret[-1] != "A" else "B"), NOW) is None
    assert tokens.check_token(conn, secret + "x", NOW) is None
    assert tokens.check_token(conn, "", NOW) is None
    # Uses are written at most once a minute.
    tokens.check_token(conn, secret, NOW + 30)
    assert tokens.list_tokens(conn)[0].last_used_at == NOW + 1
    tokens.check_token(conn, secret, NOW + 61)
    assert tokens.list_tokens(conn)[0].last_used_at == NOW + 61


def test_the_catalog_holds_a_hash_never_the_secret(conn):
    _made, secret = tokens.create_token(conn, "ci", ["read"], NOW)
    rows = conn.exec_driver_sql("SELECT * FROM api_tokens").fetchall()
    assert not any(secret.rsplit("_", 1)[1] in str(v) for row in rows for v in row)


def test_revoked_tokens_stop_working_and_their_name_may_be_used_again(conn):
    _made, old = tokens.create_token(conn, "ci", ["admin"], NOW)
    with pytest.raises(tokens.TokenError, match="exists"):
        tokens.create_token(conn, "ci", ["read"], NOW)
    assert tokens.revoke_token(conn, "ci", NOW) is True
    assert tokens.revoke_token(conn, "ci", NOW) is False
    assert tokens.check_token(conn, old, NOW) is None
    _made, new = tokens.create_token(conn, "ci", ["read"], NOW)
    assert tokens.check_token(conn, new, NOW).scopes == ("read",)
    assert tokens.check_token(conn, old, NOW) is None


@pytest.mark.parametrize(
    ("held", "needed", "allowed"),
    [
        (("read",), "read", True),
        (("read",), "fill", False),
        (("fill",), "read", True),
        (("fill",), "admin", False),
        (("admin",), "fill", True),
        ((), "read", False),
    ],
)
def test_scopes_nest_admin_over_fill_over_read(held, needed, allowed):
    assert tokens.allows(held, needed) is allowed


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "ü"])
def test_bad_token_names_are_refused(conn, name):
    with pytest.raises(tokens.TokenError):
        tokens.create_token(conn, name, ["read"], NOW)


def test_events_filter_by_action_prefix_and_actor_newest_first(conn):
    ci, op = ev.token_actor("ci", "10.0.0.7"), ev.Actor(ev.OPERATOR, "10.0.0.8")
    ev.append(conn, NOW, ci, "fill.queued", "https://v.example/a?X-Amz-Signature=s3cr3t")
    ev.append(conn, NOW + 1, op, "artifact.deleted", "https://v.example/b")
    ev.append(conn, NOW + 2, ci, "fill.completed", "https://v.example/a")
    found, total = ev.query(conn, action="fill.")
    assert total == 2 and [e.action for e in found] == ["fill.completed", "fill.queued"]
    assert "s3cr3t" not in found[1].subject  # stored redacted
    found, total = ev.query(conn, actor="operator")
    assert total == 1 and found[0].client == "10.0.0.8"
    found, total = ev.query(conn, limit=1, offset=1)
    assert total == 3 and found[0].action == "artifact.deleted"


def test_events_are_append_only(conn):
    ev.append(conn, NOW, ev.THE_HOST, "fill.completed", "https://v.example/a")
    # The engine itself refuses (a trigger on each backend), whoever writes.
    with pytest.raises(DBAPIError, match="append-only"):
        conn.exec_driver_sql("UPDATE events SET outcome = 'failed'")


def test_retention_drops_by_age_and_by_count(conn):
    for n in range(10):
        ev.append(
            conn, NOW - (9 - n) * DAY, ev.THE_HOST, "fill.completed", f"https://v.example/{n}"
        )
    assert ev.prune(conn, NOW, max_age=5 * DAY + 1, max_count=0) == 4
    assert ev.prune(conn, NOW, max_age=0, max_count=3) == 3
    found, total = ev.query(conn)
    assert total == 3 and [e.subject for e in found] == [
        f"https://v.example/{n}" for n in (9, 8, 7)
    ]


def test_daily_traffic_adds_up_per_day_and_fills_missing_days_with_zeros(conn):
    add_traffic(conn, day_of(NOW), 100, 10)
    add_traffic(conn, day_of(NOW), 5, 1)
    add_traffic(conn, day_of(NOW - 2 * DAY), 7, 0)
    add_traffic(conn, day_of(NOW - 40 * DAY), 999, 999)
    days = last_days(conn, NOW, 30)
    assert len(days) == 30 and days[-1] == (day_of(NOW), 105, 11)
    assert days[-3] == (day_of(NOW - 2 * DAY), 7, 0) and days[-2][1:] == (0, 0)
    assert sum(s for _, s, _ in days) == 112


def test_the_chart_is_well_formed_svg_with_a_bar_per_series_and_day():
    days = [(day_of(NOW - n * DAY), n * 1000, n * 10) for n in range(29, -1, -1)]
    svg = ET.fromstring(str(traffic_svg(days)))
    ns = "{http://www.w3.org/2000/svg}"
    bars = [r for r in svg.iter(f"{ns}rect") if "bar" in r.get("class", "")]
    assert len(bars) == 60
    fills = {r.get("class"): r.get("fill") for r in bars}
    assert fills == {"bar served": "#1d4ed8", "bar fetched": "url(#hatch)"}
    assert svg.get("role") == "img" and "last 30 days" in svg.get("aria-label")
    assert all(float(r.get("height")) >= 0 for r in bars)


def test_the_chart_of_no_traffic_is_flat_and_still_labelled():
    days = [(day_of(NOW - n * DAY), 0, 0) for n in range(29, -1, -1)]
    svg = ET.fromstring(str(traffic_svg(days)))
    heights = {
        r.get("height") for r in svg.iter("{http://www.w3.org/2000/svg}rect") if r.get("class")
    }
    assert heights == {"0.0"}
    assert "0 B served" in svg.get("aria-label")
