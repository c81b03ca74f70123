"""Log output: one JSON object per line for log shippers (`--log-format json`), and redaction.

URLs are logged without their query string or user info: presigned URLs carry signatures there,
and a log is read by more people than the cache is. Header values are never logged.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import IO
from urllib.parse import urlsplit, urlunsplit

from twisted.logger import ILogObserver, formatEvent
from zope.interface import provider

_HIDDEN_FIELDS = ("authorization", "cookie", "password", "secret", "token", "credential")


def redact_url(url: str) -> str:
    """url without user info and with the query replaced by '?…' (for logs)."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:
        return "<unparseable URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


def _jsonable(value):
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
        return list(value)
    return None


def json_observer(stream: IO[str]):
    """An ILogObserver writing each event as one line of JSON to stream."""

    @provider(ILogObserver)
    def observe(event: dict) -> None:
        level = event.get("log_level")
        record = {
            "time": datetime.fromtimestamp(event.get("log_time", 0), UTC).isoformat(),
            "level": getattr(level, "name", "info"),
            "namespace": event.get("log_namespace", "-"),
            "message": formatEvent(event),
        }
        for key, value in event.items():
            if key.startswith("log_") or key in record or key in ("format", "message"):
                continue
            if any(hidden in key.lower() for hidden in _HIDDEN_FIELDS):
                continue
            simple = _jsonable(value)
            if simple is not None:
                record[key] = simple
        failure = event.get("log_failure")
        if failure is not None:
            record["error"] = failure.getTraceback()
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        stream.flush()

    return observe
