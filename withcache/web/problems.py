"""RFC 9457 problem details for the API: one stable `type` URI per kind of error.

A client branches on `type` (never on `title` or `detail`, which are for people). The kinds are
listed here once; the OpenAPI document and docs/api.md name the same ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

PROBLEM_BASE = "urn:withcache:problem:"
PROBLEM_TYPE = b"application/problem+json"

# slug -> (status, title)
KINDS: dict[str, tuple[int, str]] = {
    "unauthorized": (401, "A valid bearer token or operator session is required"),
    "insufficient-scope": (403, "The token's scopes do not allow this"),
    "csrf-rejected": (403, "A session request that changes state needs its X-CSRF-Token"),
    "not-found": (404, "No such resource"),
    "method-not-allowed": (405, "Method not allowed on this resource"),
    "invalid-parameter": (400, "A query parameter or body field is missing or malformed"),
    "invalid-json": (400, "The request body is not the JSON object expected"),
    "invalid-url": (400, "The URL cannot be cached"),
    "refused-origin": (422, "The origin policy refuses to fetch this URL"),
    "fill-finished": (409, "The fill has already finished or is committing"),
    "token-conflict": (409, "A live token already has this name"),
    "catalog-unavailable": (503, "The catalog could not answer; try again shortly"),
}


@dataclass
class Problem(Exception):
    """An error the API answers as problem+json; `kind` is a key of KINDS."""

    kind: str
    detail: str = ""
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def status(self) -> int:
        return KINDS[self.kind][0]

    def body(self, instance: str | None = None) -> bytes:
        status, title = KINDS[self.kind]
        doc: dict[str, object] = {"type": PROBLEM_BASE + self.kind, "title": title}
        doc["status"] = status
        if self.detail:
            doc["detail"] = self.detail
        if instance:
            doc["instance"] = instance
        return json.dumps(doc).encode("utf-8")
