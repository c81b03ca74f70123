"""Fill leases: one fill per cache key across every host on one catalog.

A fill's job row carries a lease: its owner (the holding host's --host-id), a token naming this
one claim, the owner's advertise URL (where other hosts relay clients to the fill's stream) and
an expiry. The owner renews it while the fill is queued or running; a host that dies stops
renewing, and once the lease has expired any host may take the job over. Claims are write
transactions, which the catalog serialises (withcache.catalog_db), and the unique index on an
active job's key (revision 009_leases) backs that up: two hosts that miss one key at once cannot
both insert a job for it.

Every write of a leased job names its token, so a host that lost its lease (it could not renew
in time and another host took over) changes nothing: its progress, its outcome and its commit
are refused. The commit's check runs in the transaction that writes the artifact row
(`held_for_commit`, a guard of catalog.put_artifact): two hosts never both commit a key.

Times are the hosts' own clocks (seconds since the epoch, the `now` each host is given), so
hosts sharing a catalog keep their clocks in step (NTP): a skew well under a third of the lease
length is harmless; a larger one makes leases look expired early (a second fill that the
first's next renewal stops) or late (a slower failover). The database's clock would spare that
assumption but not the hosts' own timers, and would take the lease logic out of reach of a
test's Clock.

Blocking functions of a connection, as catalog.py's are; withcache.downloads calls them through
Catalog.run.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, or_, select, update

from withcache import catalog as cat
from withcache.atomicfile import replace_text
from withcache.catalog import JobRow
from withcache.catalog_db import insert, transaction
from withcache.jobs import QUEUED, RUNNING
from withcache.tables import jobs

# Seconds a lease lasts unless renewed (--lease). Renewed every third of it, so a renewal may
# be late twice (a busy database thread, a PostgreSQL restart of a few seconds) before the lease
# is at risk; failover after a host dies takes about this plus a watch interval, small against
# fills that take minutes (clients meanwhile fall through to the origin, as on any miss).
LEASE = 15.0
# Host ids are shown in the UI, logs and the X-Withcache-Relay header: a plain name.
HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")


def default_host_id() -> str:
    """This machine's name and a random suffix (a host id the data dir then keeps)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:48].strip("-.") or "host"
    return f"{name}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Identity:
    """Who this host is to the others: its id, and where they can reach its read path (a
    callable: with tcp:0 the port is known only once bound; None: nowhere)."""

    host_id: str
    advertise: Callable[[], str | None] = field(default=lambda: None, compare=False)


@dataclass(frozen=True)
class Lease:
    owner: str | None
    token: str | None
    url: str | None
    until: float | None

    def live(self, now: float) -> bool:
        """Held by a host that renewed it lately."""
        return self.owner is not None and self.until is not None and self.until >= now


@dataclass(frozen=True)
class Claim:
    """The outcome of a claim: the key's active job, its lease, and whether it is ours (new, or
    taken over from a host whose lease expired) or held by another live host; or, for a claim
    of a key the caller had just found absent, `filled`: another host committed it meanwhile."""

    job: JobRow
    lease: Lease
    ours: bool
    taken_over: bool = False
    filled: bool = False


class LeaseLost(Exception):
    """Another host took this fill over (its lease expired): nothing of it may be written."""


j = jobs.c
_ACTIVE = j.state.in_([str(QUEUED), str(RUNNING)])
_LEASE_COLUMNS = (j.lease_owner, j.lease_token, j.lease_url, j.lease_until)


def _row(found: Any) -> tuple[JobRow, Lease]:
    return JobRow(*found[:11]), Lease(*found[11:])


def _active_job(conn: Connection, key: str) -> tuple[JobRow, Lease] | None:
    found = conn.execute(
        select(*cat._JOB_COLUMNS, *_LEASE_COLUMNS).where(j.key == key, _ACTIVE)
    ).first()
    return None if found is None else _row(found)


def get_job(conn: Connection, job_id: int) -> tuple[JobRow, Lease] | None:
    found = conn.execute(select(*cat._JOB_COLUMNS, *_LEASE_COLUMNS).where(j.id == job_id)).first()
    return None if found is None else _row(found)


def _lease_values(lease: Lease) -> dict[str, Any]:
    return {
        "lease_owner": lease.owner,
        "lease_token": lease.token,
        "lease_url": lease.url,
        "lease_until": lease.until,
    }


def claim(
    conn: Connection,
    job: JobRow,
    owner: str,
    url: str | None,
    now: float,
    length: float,
    absent: bool = False,
) -> Claim:
    """Claim a fill of job.key for owner, in one transaction: insert job (queued) leased to
    owner; or, when the key has an active job already, take it over if its lease has expired
    (or was owner's own, from a run before this one), else report the live holder. With absent
    (the caller's miss found no artifact), an artifact row there now was committed by another
    host since: nothing is claimed (`filled`)."""
    lease = Lease(owner, secrets.token_hex(16), url, now + length)
    with transaction(conn):
        for _ in range(3):
            found = _active_job(conn, job.key)
            if found is None:
                if absent and cat.get_artifact(conn, job.key) is not None:
                    return Claim(job, Lease(None, None, None, None), ours=False, filled=True)
                inserted = conn.execute(
                    insert(conn, jobs)
                    .values(
                        key=job.key,
                        url=job.url,
                        source=job.source,
                        state=str(QUEUED),
                        created_at=job.created_at,
                        **_lease_values(lease),
                    )
                    .on_conflict_do_nothing()
                    .returning(j.id)
                ).first()
                if inserted is not None:
                    mine = JobRow(
                        inserted[0], job.key, job.url, job.source, QUEUED, created_at=job.created_at
                    )
                    return Claim(mine, lease, ours=True)
                continue  # another host inserted it meanwhile: look again
            row, held = found
            if held.live(now) and held.owner != owner:
                return Claim(row, held, ours=False)
            if _take(conn, row.id, lease, now, job.url):
                taken, _ = _active_job(conn, job.key) or found
                return Claim(taken, lease, ours=True, taken_over=True)
    raise RuntimeError(f"could not claim a fill of {job.key}: its job row kept changing")


def _take(conn: Connection, job_id: int | None, lease: Lease, now: float, url: str | None) -> bool:
    """Move an active job whose lease is free, expired or the new owner's own to a new lease
    (queued again, from byte 0); False when another host got there first."""
    values: dict[str, Any] = {
        **_lease_values(lease),
        "state": str(QUEUED),
        "bytes_done": 0,
        "started_at": None,
    }
    if url is not None:
        values["url"] = url
    taken = conn.execute(
        update(jobs)
        .where(
            j.id == job_id,
            _ACTIVE,
            or_(j.lease_until.is_(None), j.lease_until < now, j.lease_owner == lease.owner),
        )
        .values(**values)
    )
    return taken.rowcount > 0


def take_over(
    conn: Connection, job_id: int, owner: str, url: str | None, now: float, length: float
) -> tuple[JobRow, Lease, Lease] | None:
    """Take over an active job whose lease is free, expired or owner's own: (the job as now
    queued, the new lease, the lease it had); None if it is held by a live host or finished."""
    lease = Lease(owner, secrets.token_hex(16), url, now + length)
    with transaction(conn):
        before = get_job(conn, job_id)
        if before is None or not _take(conn, job_id, lease, now, None):
            return None
        after = get_job(conn, job_id)
    assert after is not None
    return after[0], lease, before[1]


def holder(conn: Connection, key: str, now: float) -> Lease | None:
    """The live lease of key's active job, if another host may be filling it."""
    found = _active_job(conn, key)
    if found is None or not found[1].live(now):
        return None
    return found[1]


def expired(conn: Connection, now: float, limit: int = 100) -> list[JobRow]:
    """Active jobs nobody holds: their lease expired (a host died) or was released."""
    rows = conn.execute(
        select(*cat._JOB_COLUMNS)
        .where(_ACTIVE, or_(j.lease_until.is_(None), j.lease_until < now))
        .order_by(j.id)
        .limit(limit)
    )
    return [JobRow(*row) for row in rows]


def renew(conn: Connection, tokens: list[str], now: float, length: float) -> list[str]:
    """Extend each lease to now + length; returns the tokens that are no longer held (their job
    was taken over, or finished by someone else)."""
    lost = []
    with transaction(conn):
        for token in tokens:
            renewed = conn.execute(
                update(jobs).where(j.lease_token == token, _ACTIVE).values(lease_until=now + length)
            )
            if not renewed.rowcount:
                lost.append(token)
    return lost


def release(conn: Connection, token: str) -> None:
    """Let go of a lease (a host stopping with the job unfinished): any host may take it now."""
    with transaction(conn):
        conn.execute(update(jobs).where(j.lease_token == token).values(lease_until=None))


def update_job(conn: Connection, job: JobRow, token: str | None) -> bool:
    """catalog.update_job for a leased job: written only while token still holds it."""
    with transaction(conn):
        written = conn.execute(
            update(jobs)
            .where(j.id == job.id, j.lease_token.is_not_distinct_from(token))
            .values(
                state=str(job.state),
                bytes_done=job.bytes_done,
                bytes_total=job.bytes_total,
                error=job.error,
                started_at=job.started_at,
                finished_at=job.finished_at,
            )
        )
        return written.rowcount > 0


def held_for_commit(job_id: int | None, token: str | None) -> Callable[[Connection], None]:
    """A guard for catalog.put_artifact: in its transaction, the job must still be active and
    held by token (else LeaseLost, and nothing is written); it is marked completed there, so
    the key is free for a new fill the moment its artifact row exists."""

    def guard(conn: Connection) -> None:
        if job_id is None:
            return  # not a job's fill (an import)
        held = conn.execute(
            update(jobs)
            .where(j.id == job_id, _ACTIVE, j.lease_token.is_not_distinct_from(token))
            .values(state="completed", lease_until=None)
        )
        if not held.rowcount:
            raise LeaseLost(f"job {job_id} is no longer this host's to commit")

    return guard


def valid_advertise_url(url: str) -> bool:
    """Whether url may be advertised to other hosts (and relayed to): http(s) with a host, no
    user info, query or fragment, printable ASCII."""
    if not url or not url.isascii() or not url.isprintable():
        return False
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and port_ok
        and parts.username is None
        and parts.password is None
        and not parts.query
        and not parts.fragment
    )


def persisted_host_id(data_dir: str) -> str:
    """The host id kept in <data_dir>/host-id, made on first use (blocking; at start-up). It
    survives restarts, so a restarted host resumes its own fills without waiting for their
    leases to expire; hosts that share a data dir need a --host-id each."""
    path = os.path.join(data_dir, "host-id")
    try:
        with open(path, encoding="utf-8") as f:
            found = f.read().strip()
        if HOST_ID.fullmatch(found):
            return found
    except FileNotFoundError:
        pass
    made = default_host_id()
    replace_text(path, made + "\n")
    return made
