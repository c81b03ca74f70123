"""Log output: one JSON object per line for log shippers (`--log-format json`), and redaction.

URLs are logged and shown without their user info and with the values of signature and
credential-like query parameters replaced by '…' (withcache.keys lists them): presigned URLs
carry signatures there, and a log or the operator UI is read by more people than the cache is.
The other parameters are shown as they are, since they are part of the cache key
(`?version=1.2.3`). Header values are never logged.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import IO
from urllib.parse import urlsplit, urlunsplit

from twisted.logger import ILogObserver, formatEvent
from zope.interface import provider

from withcache.keys import is_sensitive_param, param_name

_HIDDEN_FIELDS = ("authorization", "cookie", "password", "secret", "token", "credential")


def redact_query(query: str) -> str:
    """A query with the value of each sensitive parameter replaced by '…'."""
    out = []
    for param in query.split("&"):
        name, eq, _value = param.partition("=")
        out.append(f"{name}=…" if eq and is_sensitive_param(param_name(name)) else param)
    return "&".join(out)


def redact_url(url: str) -> str:
    """url without user info or fragment, and with sensitive query values replaced by '…'
    (for logs, error texts and the UI)."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:
        return "<unparseable URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, redact_query(parts.query), ""))


_URL_IN_TEXT = re.compile(r"https?://[^\s'\"<>]+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}"  # punctuation after a URL in prose, not part of it


def _redact_match(match: re.Match[str]) -> str:
    url = match.group(0)
    stripped = url.rstrip(_TRAILING)
    return redact_url(stripped) + url[len(stripped) :]


def redact_text(text: str) -> str:
    """Free text (an error message) with every http(s) URL in it redacted as redact_url does."""
    return _URL_IN_TEXT.sub(_redact_match, text)


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
