"""The API's JSON: the shape of each thing it answers with, and the reading of its requests
(query parameters, bodies, page cursors), each failure a Problem."""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from withcache import catalog as cat
from withcache import events as ev
from withcache import freshness, tokens
from withcache.keys import encode_token
from withcache.logs import redact_text, redact_url
from withcache.web.problems import Problem

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
MAX_BODY = 64 * 1024


def iso(ts: float | None) -> str | None:
    """RFC 3339 UTC time, or None."""
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _basename(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] or "file"


def artifact_json(a: cat.Artifact, verdict: freshness.Verdict, now: float) -> dict[str, Any]:
    """An artifact as the API shows it, with its freshness now (withcache.freshness)."""
    return {
        "key": a.key,
        "url": redact_url(a.url),
        "sha256": a.sha256,
        "size": a.size,
        "content_type": a.content_type,
        "fetched_at": iso(a.fetched_at),
        "hits": a.hits,
        "misses": a.misses,
        "last_hit_at": iso(a.last_hit_at),
        "pinned": a.pinned,
        "cache_path": f"/b/{encode_token(a.key)}/{_basename(a.key)}",
        "validated_at": iso(a.checked_at),
        "origin_headers": freshness.decode(a.origin_headers),
        "freshness": {
            "fresh": verdict.fresh and not a.refresh,
            "fresh_until": iso(verdict.fresh_until),
            "by_rule": verdict.by_rule,
            "text": freshness.describe(verdict, now),
        },
    }


def job_json(j: cat.JobRow) -> dict[str, Any]:
    return {
        "id": j.id,
        "key": j.key,
        "url": redact_url(j.url),
        "source": j.source,
        "state": j.state,
        "bytes_done": j.bytes_done,
        "bytes_total": j.bytes_total,
        "error": None if j.error is None else redact_text(j.error),
        "created_at": iso(j.created_at),
        "started_at": iso(j.started_at),
        "finished_at": iso(j.finished_at),
    }


def miss_json(m: cat.Miss) -> dict[str, Any]:
    return {
        "key": m.key,
        "url": redact_url(m.url),
        "count": m.count,
        "first_seen": iso(m.first_seen),
        "last_seen": iso(m.last_seen),
    }


def event_json(e: ev.Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": iso(e.at),
        "actor": e.actor,
        "client": e.client,
        "action": e.action,
        "subject": e.subject,
        "outcome": e.outcome,
        "detail": e.detail,
    }


def token_json(t: tokens.Token) -> dict[str, Any]:
    return {
        "name": t.name,
        "scopes": list(t.scopes),
        "created_at": iso(t.created_at),
        "last_used_at": iso(t.last_used_at),
        "revoked_at": iso(t.revoked_at),
    }


def arg(request, name: str) -> str:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else ""


def int_arg(request, name: str, default: int, least: int, most: int) -> int:
    raw = arg(request, name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Problem("invalid-parameter", f"{name} must be an integer") from None
    if not least <= value <= most:
        raise Problem("invalid-parameter", f"{name} must be between {least} and {most}")
    return value


def page(request) -> tuple[int, int]:
    limit = int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    return limit, int_arg(request, "offset", 0, 0, 2**62)


def listing(
    request,
    items: list,
    limit: int,
    offset: int,
    total: int | None,
    after: str | None = None,
) -> dict:
    """The envelope of a list: its items, the page asked for, the total if known, and the
    path of the next page (None on the last): by cursor (`after`) when given, else by offset."""
    more = (offset + len(items) < total) if total is not None else len(items) == limit
    if b"after" in request.args:
        more = len(items) == limit  # where a cursor stands in the whole is not known
    query = {
        k.decode("utf-8", "replace"): v[0].decode("utf-8", "replace")
        for k, v in request.args.items()
    }
    query.pop("after", None)
    query.pop("offset", None)
    query["limit"] = str(limit)
    if after is not None:
        query["after"] = after
    else:
        query["offset"] = str(offset + limit)
    page: dict[str, Any] = {"items": items, "limit": limit, "offset": offset}
    if total is not None:
        page["total"] = total
    page["next"] = f"{request.path.decode('latin-1')}?{urlencode(query)}" if more else None
    return page


def cursor(artifact: cat.Artifact) -> str:
    """An opaque cursor naming an artifact's place in the list (its fetched_at and key)."""
    return cursor_of(artifact.fetched_at, artifact.key)


def cursor_of(fetched_at: float, key: str) -> str:
    raw = json.dumps([fetched_at, key]).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(raw: str) -> tuple[float, str]:
    """The (fetched_at, key) a cursor() names; ValueError if it is not one."""
    try:
        fetched_at, key = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not isinstance(key, str) or isinstance(fetched_at, bool):
            raise ValueError(raw)
        return float(fetched_at), key
    except (ValueError, TypeError, binascii.Error):
        raise ValueError("not a cursor") from None


def after(request) -> tuple[float, str] | None:
    raw = arg(request, "after")
    if not raw:
        return None
    try:
        return decode_cursor(raw)
    except ValueError:
        raise Problem("invalid-parameter", "after is not a cursor this API gave") from None


def body(request) -> dict[str, Any]:
    raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
    if len(raw) > MAX_BODY:
        raise Problem("invalid-json", f"the body is larger than {MAX_BODY} bytes")
    try:
        doc = json.loads(raw or b"null")
    except ValueError:
        raise Problem("invalid-json", "the body is not JSON") from None
    if not isinstance(doc, dict):
        raise Problem("invalid-json", "the body must be a JSON object")
    return doc


def string(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value.strip():
        raise Problem("invalid-parameter", f"{name} (a non-empty string) is required")
    return value.strip()
