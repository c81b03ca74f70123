"""API bearer tokens: create, check, list and revoke; the secret is shown once, kept as a hash.

A token is the string `wct_<id>_<secret>`. The catalog keeps the id, a name, the scopes and the
SHA-256 of the whole string, never the string: a copy of cache.db (a backup) holds no usable
token. Checking finds the row by id and compares digests in constant time, so the time taken
says nothing about how much of a guess was right. Scopes nest: `admin` can do what `fill` can,
and `fill` what `read` can.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import OperationalError

from withcache.catalog_db import transaction
from withcache.tables import api_tokens

READ, FILL, ADMIN = "read", "fill", "admin"
SCOPES = (READ, FILL, ADMIN)
PREFIX = "wct_"
# A use is written at most this often per token: a busy CI job must not write on every request.
LAST_USED_EVERY = 60.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_TOKEN = re.compile(r"wct_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


class TokenError(ValueError):
    """A token name or scope that cannot be used; the message says why."""


@dataclass(frozen=True)
class Token:
    """What the catalog knows of a token (never its secret)."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None

    def allows(self, scope: str) -> bool:
        """Whether this token may do what `scope` covers (admin ⊇ fill ⊇ read)."""
        return allows(self.scopes, scope)


def allows(scopes: tuple[str, ...] | list[str], scope: str) -> bool:
    held = max((SCOPES.index(s) for s in scopes if s in SCOPES), default=-1)
    return held >= SCOPES.index(scope)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise TokenError(
            "a token name is 1-64 letters, digits and . _ @ -, starting with a letter or digit"
        )
    return name


def check_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise TokenError(f"scopes are one or more of {', '.join(SCOPES)}; got {list(scopes)!r}")
    return tuple(s for s in SCOPES if s in scopes)


def _digest(whole: str) -> str:
    return hashlib.sha256(whole.encode("ascii")).hexdigest()


t = api_tokens.c
_COLUMNS = (t.id, t.name, t.scopes, t.created_at, t.last_used_at, t.revoked_at)


def _token(row: tuple) -> Token:
    tid, name, scopes, created, used, revoked = row
    return Token(tid, name, tuple(scopes.split()), created, used, revoked)


def create_token(
    conn: Connection, name: str, scopes: list[str] | tuple[str, ...], now: float
) -> tuple[Token, str]:
    """A new token and its bearer string (the only time anyone sees it). Raises TokenError for
    a bad name or scopes, or a name a live token already has."""
    check_name(name)
    scopes = check_scopes(scopes)
    tid, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    whole = f"{PREFIX}{tid}_{secret}"
    with transaction(conn):
        taken = conn.execute(select(t.revoked_at).where(t.name == name)).first()
        if taken is not None and taken[0] is None:
            raise TokenError(f"a token named {name!r} exists; revoke it first")
        # A revoked token's name may be used again; its row goes (its events keep the name).
        conn.execute(delete(api_tokens).where(t.name == name))
        conn.execute(
            api_tokens.insert().values(
                id=tid, name=name, hash=_digest(whole), scopes=" ".join(scopes), created_at=now
            )
        )
    return Token(tid, name, scopes, now), whole


def check_token(conn: Connection, presented: str, now: float) -> Token | None:
    """The live token a bearer string names, recording its use; None for anything else."""
    match = _TOKEN.fullmatch(presented)
    if match is None:
        return None
    row = conn.execute(select(*_COLUMNS, t.hash).where(t.id == match.group(1))).first()
    # A digest is compared even when there is no row, so a miss costs what a hit costs.
    stored = row[-1] if row else "0" * 64
    if not hmac.compare_digest(stored, _digest(presented)) or row is None:
        return None
    token = _token(tuple(row[:-1]))
    if token.revoked_at is not None:
        return None
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_EVERY:
        try:
            with transaction(conn):
                conn.execute(update(api_tokens).where(t.id == token.id).values(last_used_at=now))
        except OperationalError:
            pass  # bookkeeping: a busy or full disk must not refuse a good token
    return token


def list_tokens(conn: Connection, include_revoked: bool = True) -> list[Token]:
    query = select(*_COLUMNS).order_by(t.created_at, t.name)
    if not include_revoked:
        query = query.where(t.revoked_at.is_(None))
    return [_token(tuple(row)) for row in conn.execute(query)]


def revoke_token(conn: Connection, name: str, now: float) -> bool:
    """Revoke the live token of that name; whether there was one."""
    with transaction(conn):
        done = conn.execute(
            update(api_tokens).where(t.name == name, t.revoked_at.is_(None)).values(revoked_at=now)
        )
        return done.rowcount > 0
