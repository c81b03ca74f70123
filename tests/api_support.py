"""Helpers for the API tests: raw JSON calls to a running host, tokens made with withcache-admin."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support import tool


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    doc: object

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


def call(
    base: str,
    method: str,
    path: str,
    token: str | None = None,
    body: object = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> Answer:
    """One API request as a script would send it; the answer's JSON (None if empty)."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    if data is not None:
        sent.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(base + path, data, sent, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, got, text = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, got, text = e.code, dict(e.headers), e.read()
    return Answer(status, got, json.loads(text) if text else None)


def admin(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("withcache-admin"), *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def make_token(data_dir: Path, name: str, *scopes: str) -> str:
    """A new token's secret, made with withcache-admin token create."""
    flags = [f"--scope={s}" for s in scopes]
    out = admin("token", "create", name, *flags, data_dir=data_dir)
    return out.stdout.strip()
