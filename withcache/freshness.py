"""HTTP freshness (RFC 9111) for withcache: what a fill may store, how long an artifact is fresh,
and what may be served once it is stale.

Pure functions of an origin's response headers, the operator's rules (`--fresh GLOB=LIFETIME`)
and `now`, so the cache decides with the reactor's clock and the tests with a task.Clock. The
headers kept with an artifact (KEPT) are the only input besides the time it was last validated:
a 304 that refreshes them refreshes the verdict.

Choices where RFC 9111 leaves them to a cache (README "Fills"):
- withcache is a shared cache, but a fill made with the operator's netrc credentials is shared by
  the operator's choice: `private` does not stop it, `no-store` does. A response that varies on
  anything but Accept-Encoding is not stored. A matching operator rule overrides all three.
- No explicit lifetime: 10 % of the time between Date and Last-Modified, at most
  `--heuristic-max`; with no Last-Modified either, `--heuristic-max` from the fill.
- An artifact stored before withcache kept origin headers has none: it stays fresh (as it was
  served before) unless a rule gives it a lifetime, counted from its fill.
- Stale and not revalidated in time: served only within the origin's `stale-while-revalidate`
  window; origin down or failing: served within `stale-if-error` (the origin's, or
  `--stale-if-error`, whichever is longer). `must-revalidate`, `proxy-revalidate`, `s-maxage`
  and `no-cache` forbid both.
"""

from __future__ import annotations

import email.utils
import fnmatch
import json
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from withcache.atomicfile import replace_text
from withcache.sanitise import printable

# The origin's headers kept with each artifact (lower-case names): validators, what freshness
# is computed from, and what is served back (Content-Disposition; Last-Modified).
KEPT = (
    "etag",
    "last-modified",
    "date",
    "age",
    "cache-control",
    "expires",
    "content-disposition",
    "vary",
)
# Longest value kept of each; real ones are far shorter, and each is sent again to clients.
MAX_VALUE = 1024
FOREVER = math.inf
# The host's freshness options, saved at start for the admin CLI (withcache-admin ls).
POLICY_FILE = "freshness.json"
DAY = 86400.0

_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY, "w": 7 * DAY}


class NotCacheable(Exception):
    """An origin's answer that must not be stored: the fill's outcome, not a failure to retry.
    `kind` is one of REFUSALS (a metrics label), `detail` what the origin said."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"not cacheable: {detail}")
        self.kind, self.detail = kind, detail


REFUSALS = ("no-store", "private", "vary")


def parse_duration(text: str) -> float:
    """Seconds in "90", "30s", "10m", "1h", "2d", "1w" or "forever"; ValueError otherwise."""
    text = text.strip().lower()
    if text in ("forever", "immutable"):
        return FOREVER
    unit = text[-1:] if text[-1:] in _UNITS else ""
    number = text[: len(text) - len(unit)]
    seconds = float(number) * _UNITS[unit] if _NUMBER.fullmatch(number) else math.nan
    if not math.isfinite(seconds):
        raise ValueError(f"not a duration: {text!r} (say 90, 30s, 10m, 1h, 2d, 1w or forever)")
    return seconds


@dataclass(frozen=True)
class Rule:
    """`--fresh GLOB=LIFETIME`: URLs matching GLOB (fnmatch, whole URL, case-sensitive) are
    fresh for LIFETIME after each validation whatever the origin says; `origin` defers to it."""

    glob: str
    lifetime: float | None  # None: the origin's rules

    @classmethod
    def parse(cls, text: str) -> Rule:
        glob, sep, value = text.rpartition("=")
        if not sep or not glob:
            raise ValueError(f"--fresh wants GLOB=LIFETIME, not {text!r}")
        value = value.strip().lower()
        return cls(glob, None if value == "origin" else parse_duration(value))

    def matches(self, url: str) -> bool:
        return fnmatch.fnmatchcase(url, self.glob)

    def __str__(self) -> str:
        if self.lifetime is None:
            return f"{self.glob}=origin"
        return f"{self.glob}={'forever' if self.lifetime == FOREVER else f'{self.lifetime:.3f}'}"


@dataclass(frozen=True)
class Policy:
    """The operator's freshness options (withcache.tap)."""

    rules: tuple[Rule, ...] = ()
    heuristic_fraction: float = 0.1
    heuristic_max: float = DAY
    stale_if_error: float = DAY
    # Further misses of a key whose answer may not be stored do not refetch it for this long.
    uncacheable_for: float = 3600.0
    # How long a request for a stale artifact waits for its revalidation before answering.
    revalidate_wait: float = 2.0

    def rule_for(self, url: str) -> Rule | None:
        """The first rule whose glob matches url, with or without its query; None if none
        does, or if that rule defers to the origin."""
        bare = url.split("?", 1)[0].split("#", 1)[0]
        for rule in self.rules:
            if rule.matches(url) or rule.matches(bare):
                return rule if rule.lifetime is not None else None
        return None

    def to_json(self) -> str:
        """For the serving workers, which decide freshness as the host does."""
        fields = {k: v for k, v in vars(self).items() if k != "rules"}
        return json.dumps({**fields, "rules": [str(r) for r in self.rules]})

    @classmethod
    def from_json(cls, text: str) -> Policy:
        fields = json.loads(text)
        rules = tuple(Rule.parse(r) for r in fields.pop("rules"))
        return cls(rules=rules, **fields)

    def save(self, data_dir: str) -> None:
        """Leave these rules in the data dir (POLICY_FILE) for `withcache-admin ls`. Blocking."""
        path = os.path.join(data_dir, POLICY_FILE)
        replace_text(path, self.to_json())

    @classmethod
    def saved(cls, data_dir: str) -> Policy:
        """The rules the host last ran with (the defaults if it never saved any). Blocking."""
        try:
            with open(os.path.join(data_dir, POLICY_FILE), encoding="utf-8") as f:
                return cls.from_json(f.read())
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return cls()


@dataclass(frozen=True)
class Directives:
    """The Cache-Control directives withcache acts on (RFC 9111 section 5.2.2)."""

    no_store: bool = False
    no_cache: bool = False
    private: bool = False
    must_revalidate: bool = False
    max_age: int | None = None
    s_maxage: int | None = None
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    names: frozenset[str] = field(default_factory=frozenset)


def _delta(value: str | None) -> int | None:
    """delta-seconds (RFC 9111 section 1.2.2): digits only; too large is 2**31."""
    if value is None:
        return None
    value = value.strip().strip('"')
    if not value.isascii() or not value.isdigit():
        return None
    return min(int(value), 2**31)


@lru_cache(maxsize=1024)
def parse_cache_control(value: str | None) -> Directives:
    """The directives of a Cache-Control value; a malformed one is read as far as it goes and
    never raises. The first of a repeated directive wins (section 4.2.1); a repeated max-age,
    s-maxage or both no-store and something else are read conservatively (the smallest)."""
    if not value:
        return Directives()
    seen: dict[str, str | None] = {}
    # Commas inside a quoted value (no-cache="a, b") never split a directive.
    for part in re.findall(r'(?:[^,"]|"[^"]*")+', value):
        name, sep, arg = part.strip().partition("=")
        name = name.strip().lower()
        if not name:
            continue
        arg_value = arg.strip() if sep else None
        if name in ("max-age", "s-maxage") and name in seen:
            old, new = _delta(seen[name]), _delta(arg_value)
            if old is None or (new is not None and new < old):
                seen[name] = arg_value
            continue
        seen.setdefault(name, arg_value)
    return Directives(
        no_store="no-store" in seen,
        # no-cache="Set-Cookie" (field names) is read as plain no-cache: revalidate each time.
        no_cache="no-cache" in seen,
        private="private" in seen,
        must_revalidate=bool({"must-revalidate", "proxy-revalidate"} & seen.keys()),
        max_age=_delta(seen.get("max-age")) if "max-age" in seen else None,
        s_maxage=_delta(seen.get("s-maxage")) if "s-maxage" in seen else None,
        stale_while_revalidate=_delta(seen.get("stale-while-revalidate")),
        stale_if_error=_delta(seen.get("stale-if-error")),
        names=frozenset(seen),
    )


def http_date(value: str | None) -> float | None:
    """An HTTP-date (any of RFC 9110's three forms) as a POSIX time; None if it is not one."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def keep(raw: Mapping[str, list[str]]) -> dict[str, str]:
    """The KEPT headers of an origin's answer, each as one printable line (several fields of a
    list header joined with ", "; of the others the first), at most MAX_VALUE characters: they
    are stored, shown to the operator and sent again to clients."""
    kept = {}
    for name in KEPT:
        values = raw.get(name)
        if not values:
            continue
        listed = name in ("cache-control", "vary")
        text = ", ".join(values) if listed else values[0]
        text = printable(text.strip(), MAX_VALUE)
        if text:
            kept[name] = text
    return kept


def refusal(
    headers: Mapping[str, str], *, credentials_used: bool, rule: Rule | None
) -> NotCacheable | None:
    """Why a final 200 with these headers may not be stored, or None if it may."""
    if rule is not None:
        return None  # the operator's rule for this URL is the operator's choice
    cc = parse_cache_control(headers.get("cache-control"))
    if cc.no_store:
        return NotCacheable("no-store", "Cache-Control: no-store")
    if cc.private and not credentials_used:
        return NotCacheable("private", "Cache-Control: private")
    varies = [v.strip().lower() for v in headers.get("vary", "").split(",") if v.strip()]
    others = [v for v in varies if v != "accept-encoding"]
    if others:
        return NotCacheable("vary", f"Vary: {printable(', '.join(others), 100)}")
    return None


@dataclass(frozen=True)
class Verdict:
    """An artifact's freshness at one moment."""

    fresh: bool
    # When it stops being fresh (POSIX time); None if never (a rule's `forever`, no headers).
    fresh_until: float | None
    # Served stale while its revalidation runs, until then (or never: None).
    stale_while_revalidate_until: float | None = None
    # Served stale while its origin fails, until then (or never: None).
    stale_if_error_until: float | None = None
    # Fresh by an operator's rule, not by the origin's headers.
    by_rule: bool = False

    @property
    def immutable(self) -> bool:
        return self.fresh and self.fresh_until is None

    def may_serve_stale(self, now: float, *, origin_failed: bool) -> bool:
        until = self.stale_if_error_until if origin_failed else self.stale_while_revalidate_until
        if origin_failed and self.stale_while_revalidate_until is not None:
            until = max(until or 0.0, self.stale_while_revalidate_until)
        return until is not None and now < until


def lifetime(headers: Mapping[str, str], policy: Policy) -> float:
    """The freshness lifetime of a response (RFC 9111 section 4.2.1, shared cache), heuristic
    (section 4.2.2) when the origin gives none. no-cache is a lifetime of 0."""
    cc = parse_cache_control(headers.get("cache-control"))
    if cc.no_cache:
        return 0.0
    if cc.s_maxage is not None:
        return float(cc.s_maxage)
    if cc.max_age is not None:
        return float(cc.max_age)
    if "expires" in headers:
        expires = http_date(headers["expires"])
        date = http_date(headers.get("date"))
        if expires is None or date is None:
            # An invalid Expires (or "0") means already expired (section 5.3).
            return 0.0 if expires is None else max(0.0, expires - (date or expires))
        return max(0.0, expires - date)
    modified = http_date(headers.get("last-modified"))
    date = http_date(headers.get("date"))
    if modified is not None and date is not None and date >= modified:
        return min(policy.heuristic_fraction * (date - modified), policy.heuristic_max)
    return policy.heuristic_max


def initial_age(headers: Mapping[str, str], validated_at: float) -> float:
    """The response's age when it was received (section 4.2.3, without the request delay)."""
    date = http_date(headers.get("date"))
    apparent = max(0.0, validated_at - date) if date is not None else 0.0
    return max(apparent, float(_delta(headers.get("age")) or 0))


def verdict(
    headers: Mapping[str, str] | None,
    validated_at: float,
    rule: Rule | None,
    policy: Policy,
    now: float,
) -> Verdict:
    """Whether an artifact whose origin answered with `headers` (None: stored before withcache
    kept them), last validated at `validated_at`, is fresh at `now` under `rule`."""
    if headers is None:
        if rule is None or rule.lifetime == FOREVER:
            return Verdict(True, None, by_rule=rule is not None)
        assert rule.lifetime is not None
        until = validated_at + rule.lifetime
        return Verdict(now < until, until, None, until + policy.stale_if_error, True)
    if rule is not None and rule.lifetime == FOREVER:
        return Verdict(True, None, by_rule=True)
    age = initial_age(headers, validated_at)
    life = lifetime(headers, policy) if rule is None or rule.lifetime is None else rule.lifetime
    until = validated_at + life - age
    cc = parse_cache_control(headers.get("cache-control"))
    swr = sie = None
    strict = cc.must_revalidate or cc.no_cache or cc.s_maxage is not None
    if not strict:
        if cc.stale_while_revalidate is not None:
            swr = until + cc.stale_while_revalidate
        sie = until + max(float(cc.stale_if_error or 0), policy.stale_if_error)
    return Verdict(now < until, until, swr, sie, rule is not None)


@lru_cache(maxsize=4096)
def decode(stored: str | None) -> dict[str, str] | None:
    """Headers as the catalog stores them (a JSON object of strings) back; None for none or for
    a value that is not such an object (a damaged row is treated as one without headers)."""
    if stored is None:
        return None
    try:
        value = json.loads(stored)
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return None
    return {k: printable(v, MAX_VALUE) for k, v in value.items() if k in KEPT}


def encode(headers: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(headers.items())), separators=(",", ":"))


def merged(stored: Mapping[str, str], not_modified: Mapping[str, str]) -> dict[str, str]:
    """Stored headers updated by a 304's (section 4.3.4): its fields replace the stored ones."""
    return {**stored, **not_modified}


def describe(verdict: Verdict, now: float) -> str:
    """The verdict in a few words for the operator (UI, `withcache-admin ls`), times in UTC."""
    if verdict.fresh_until is None:
        return "immutable by rule" if verdict.by_rule else "no expiry (no origin headers)"
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(verdict.fresh_until))
    rule = " (rule)" if verdict.by_rule else ""
    if verdict.fresh:
        return f"fresh until {when}{rule}"
    return f"stale since {when}{rule}"


def validators(headers: Mapping[str, str] | None) -> str:
    """The stored validators as the operator reads them; "none" if there are none."""
    if not headers:
        return "none"
    shown = [f"{name} {headers[key]}" for key, name in _VALIDATORS if key in headers]
    return "; ".join(shown) or "none"


_VALIDATORS = (("etag", "ETag"), ("last-modified", "Last-Modified"))
