"""withcache.freshness: RFC 9111's rules as withcache applies them, as pure functions of time."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.web.http import datetimeToString

from withcache import freshness
from withcache.freshness import FOREVER, NotCacheable, Policy, Rule

T0 = 1_800_000_000.0  # the time of the fill in these tests
POLICY = Policy()


def date(t: float) -> str:
    return datetimeToString(int(t)).decode()


def at(now: float, headers, rule=None, policy=POLICY, validated=T0):
    return freshness.verdict(headers, validated, rule, policy, now)


# What may be stored


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ({"cache-control": "no-store"}, "no-store"),
        ({"cache-control": "max-age=60, No-Store"}, "no-store"),
        ({"cache-control": "private"}, "private"),
        ({"cache-control": 'private="set-cookie", max-age=9'}, "private"),
        ({"vary": "User-Agent"}, "vary"),
        ({"vary": "accept-encoding, Cookie"}, "vary"),
        ({"vary": "*"}, "vary"),
    ],
)
def test_answers_that_may_not_be_stored_are_refused_with_their_reason(headers, kind):
    refused = freshness.refusal(headers, credentials_used=False, rule=None)
    assert isinstance(refused, NotCacheable)
    assert refused.kind == kind
    assert str(refused).startswith("not cacheable: ")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"cache-control": "public, max-age=0"},
        {"cache-control": "no-cache"},
        {"vary": "Accept-Encoding"},
        {"cache-control": "must-revalidate", "expires": "0"},
    ],
)
def test_ordinary_answers_may_be_stored(headers):
    assert freshness.refusal(headers, credentials_used=False, rule=None) is None


def test_private_is_stored_when_the_operators_credentials_fetched_it_but_no_store_is_not():
    assert freshness.refusal({"cache-control": "private"}, credentials_used=True, rule=None) is None
    refused = freshness.refusal({"cache-control": "no-store"}, credentials_used=True, rule=None)
    assert refused is not None and refused.kind == "no-store"


def test_an_operator_rule_overrides_every_refusal():
    rule = Rule.parse("*=1h")
    for headers in ({"cache-control": "no-store, private"}, {"vary": "cookie"}):
        assert freshness.refusal(headers, credentials_used=False, rule=rule) is None


# Lifetime


def test_s_maxage_beats_max_age_beats_expires():
    expires = {"date": date(T0), "expires": date(T0 + 500)}
    assert freshness.lifetime(expires, POLICY) == 500
    assert freshness.lifetime({**expires, "cache-control": "max-age=60"}, POLICY) == 60
    both = {**expires, "cache-control": "max-age=60, s-maxage=7"}
    assert freshness.lifetime(both, POLICY) == 7


def test_an_invalid_expires_means_already_expired():
    assert freshness.lifetime({"date": date(T0), "expires": "0"}, POLICY) == 0
    assert freshness.lifetime({"date": date(T0), "expires": "yesterday"}, POLICY) == 0


def test_no_cache_is_a_lifetime_of_zero():
    assert freshness.lifetime({"cache-control": "no-cache, max-age=600"}, POLICY) == 0


def test_the_heuristic_is_a_tenth_of_the_age_since_last_modified_capped():
    headers = {"date": date(T0), "last-modified": date(T0 - 10 * 3600)}
    assert freshness.lifetime(headers, POLICY) == pytest.approx(3600)
    old = {"date": date(T0), "last-modified": date(T0 - 400 * 86400)}
    assert freshness.lifetime(old, POLICY) == POLICY.heuristic_max
    assert freshness.lifetime(old, Policy(heuristic_max=7200)) == 7200


def test_without_last_modified_or_a_lifetime_the_heuristic_cap_applies():
    assert freshness.lifetime({"etag": '"x"'}, POLICY) == POLICY.heuristic_max
    assert freshness.lifetime({}, Policy(heuristic_max=60)) == 60


@pytest.mark.parametrize(
    ("value", "max_age"),
    [
        ("max-age=60", 60),
        ("MAX-AGE=60", 60),
        ('max-age="60"', 60),
        ("max-age=60, max-age=5", 5),  # repeated: the smaller, conservatively
        ("max-age=-5", None),
        ("max-age=abc", None),
        ("max-age=99999999999999", 2**31),
        ("max-age", None),
        (",,, ;max-age=3", None),
    ],
)
def test_max_age_is_read_as_delta_seconds_and_never_raises(value, max_age):
    assert freshness.parse_cache_control(value).max_age == max_age


@given(st.text(max_size=200))
def test_any_cache_control_value_parses(value):
    freshness.parse_cache_control(value)


def test_quoted_commas_do_not_split_directives():
    cc = freshness.parse_cache_control('no-cache="a, b", max-age=9')
    assert cc.no_cache and cc.max_age == 9


# Age and the verdict over time


def test_max_age_is_fresh_until_it_passes_then_stale():
    headers = {"date": date(T0), "cache-control": "max-age=2"}
    assert at(T0 + 1.9, headers).fresh
    stale = at(T0 + 2.0, headers)
    assert not stale.fresh and stale.fresh_until == T0 + 2


def test_age_at_arrival_counts_against_the_lifetime():
    # The origin's Age (or a Date in the past) says the answer was already old when it came.
    aged = {"date": date(T0), "age": "50", "cache-control": "max-age=60"}
    assert at(T0 + 9, aged).fresh and not at(T0 + 10, aged).fresh
    late = {"date": date(T0 - 30), "cache-control": "max-age=60"}
    assert at(T0 + 29, late).fresh and not at(T0 + 30, late).fresh


def test_a_date_in_the_future_does_not_extend_the_lifetime():
    ahead = {"date": date(T0 + 3600), "cache-control": "max-age=60"}
    assert at(T0 + 59, ahead).fresh and not at(T0 + 60, ahead).fresh


def test_a_revalidation_restarts_the_lifetime():
    headers = {"date": date(T0), "cache-control": "max-age=10"}
    assert not at(T0 + 20, headers).fresh
    refreshed = freshness.merged(headers, {"date": date(T0 + 20)})
    assert at(T0 + 25, refreshed, validated=T0 + 20).fresh


def test_rules_override_the_origin_first_match_wins():
    policy = Policy(rules=(Rule.parse("*.run=forever"), Rule.parse("*/latest/*=1h")))
    headers = {"date": date(T0), "cache-control": "max-age=0"}
    forever = at(T0 + 10 * 365 * 86400, headers, policy.rule_for("https://v/x.run"), policy)
    assert forever.fresh and forever.immutable and forever.by_rule
    rule = policy.rule_for("https://v/latest/tool.tar.gz")
    assert at(T0 + 3599, headers, rule, policy).fresh
    assert not at(T0 + 3600, headers, rule, policy).fresh


def test_a_rule_matches_with_or_without_the_query_and_origin_defers():
    policy = Policy(rules=(Rule.parse("*/api/*=origin"), Rule.parse("*.run=2d")))
    assert policy.rule_for("https://v/x.run?sig=abc") == Rule("*.run", 2 * 86400)
    assert policy.rule_for("https://v/api/x.run") is None
    assert policy.rule_for("https://v/x.tar") is None


def test_artifacts_stored_before_headers_were_kept_stay_fresh_unless_a_rule_says_otherwise():
    assert at(T0 + 10**9, None).immutable
    rule = Rule.parse("*=1h")
    assert at(T0 + 3599, None, rule).fresh
    assert not at(T0 + 3600, None, rule).fresh


# Serving stale


def test_stale_if_error_by_option_and_by_origin_whichever_is_longer():
    headers = {"date": date(T0), "cache-control": "max-age=10"}
    policy = Policy(stale_if_error=100)
    v = at(T0 + 50, headers, policy=policy)
    assert not v.fresh
    assert v.may_serve_stale(T0 + 109, origin_failed=True)
    assert not v.may_serve_stale(T0 + 110, origin_failed=True)
    assert not v.may_serve_stale(T0 + 50, origin_failed=False)
    longer = {**headers, "cache-control": "max-age=10, stale-if-error=1000"}
    assert at(T0 + 50, longer, policy=policy).may_serve_stale(T0 + 1000, origin_failed=True)


def test_stale_while_revalidate_only_when_the_origin_allows_it():
    headers = {"date": date(T0), "cache-control": "max-age=10, stale-while-revalidate=30"}
    v = at(T0 + 20, headers)
    assert v.may_serve_stale(T0 + 39, origin_failed=False)
    assert not v.may_serve_stale(T0 + 40, origin_failed=False)


@pytest.mark.parametrize("cc", ["must-revalidate", "proxy-revalidate", "s-maxage=10", "no-cache"])
def test_must_revalidate_and_kin_forbid_serving_stale(cc):
    headers = {"date": date(T0), "cache-control": f"max-age=10, {cc}, stale-while-revalidate=99"}
    v = at(T0 + 11, headers)
    assert not v.fresh
    assert not v.may_serve_stale(T0 + 12, origin_failed=True)
    assert not v.may_serve_stale(T0 + 12, origin_failed=False)


# Options and stored form


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("30s", 30), ("10m", 600), ("1h", 3600), ("2d", 172800), ("1w", 604800)],
)
def test_durations(text, seconds):
    assert freshness.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-5", "nan", "inf", "1y", "1 h", "5mm"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="not a duration"):
        freshness.parse_duration(text)


@pytest.mark.parametrize("text", ["*.run", "=1h", "*.run=soon"])
def test_bad_rules_are_refused(text):
    with pytest.raises(ValueError):
        Rule.parse(text)


def test_a_policy_survives_the_trip_to_a_serving_worker():
    policy = Policy(rules=(Rule.parse("*.run=forever"), Rule.parse("*=1.5h")), heuristic_max=9)
    assert Policy.from_json(policy.to_json()) == policy
    assert math.isinf(Policy.from_json(policy.to_json()).rules[0].lifetime or 0)
    assert Rule.parse("*=forever").lifetime == FOREVER


def test_kept_headers_are_printable_bounded_and_only_those_kept():
    kept = freshness.keep(
        {
            "etag": ['"a"'],
            "cache-control": ["max-age=5", "public"],
            "content-disposition": ["attachment; filename=\x1b[31mx.run\r\n"],
            "set-cookie": ["secret=1"],
            "last-modified": ["x" * 5000],
        }
    )
    assert kept["cache-control"] == "max-age=5, public"
    assert kept["content-disposition"] == "attachment; filename=?[31mx.run"
    assert "set-cookie" not in kept
    assert len(kept["last-modified"]) == freshness.MAX_VALUE


@pytest.mark.parametrize("stored", ["not json", "[1]", '{"etag": 5}', None])
def test_a_damaged_stored_value_reads_as_no_headers(stored):
    assert freshness.decode(stored) is None


def test_stored_headers_round_trip_and_unknown_names_are_dropped():
    assert freshness.decode(freshness.encode({"etag": '"a"'})) == {"etag": '"a"'}
    assert freshness.decode('{"etag": "\\"a\\"", "x-evil": "1"}') == {"etag": '"a"'}
