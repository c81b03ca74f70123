"""Fill leases between hosts: two DownloadManagers on one catalog, each with a Clock of its own
driving its lease timers (renew, watch) and its `now`; fills the test controls."""

from __future__ import annotations

import pytest
import pytest_twisted
from sqlalchemy import select
from twisted.internet import defer
from twisted.internet.task import Clock

from tests.test_downloads import Fills, settle, within
from withcache import catalog as cat
from withcache import leases
from withcache.downloads import DownloadManager
from withcache.leases import Identity, LeaseLost
from withcache.tables import jobs

LEASE = 15.0
START = 1_000_000.0


class Host:
    """A download manager as one host runs it: its own id, URL, clock and fills."""

    def __init__(self, catalog, name: str, fill=None):
        self.clock = Clock()
        self.clock.advance(START)
        self.fills = Fills()
        self.manager = DownloadManager(
            catalog,
            fill or self.fills,
            reactor=self.clock,
            workers=2,
            now=self.clock.seconds,
            identity=Identity(name, lambda: f"http://{name}.lab:3000"),
            lease=LEASE,
        )
        self.manager.startService()

    async def tick(self, catalog, seconds: float) -> None:
        """Move this host's time on, and let what its timers set off reach the catalog."""
        self.clock.advance(seconds)
        await settle(catalog)


class FlakyCatalog:
    """The catalog as one host sees it: `down` makes every query fail (a lost connection)."""

    def __init__(self, catalog):
        self._catalog, self.down = catalog, False

    def run(self, fn, *args, **kwargs):
        if self.down:
            return defer.fail(ConnectionError("the catalog is unreachable"))
        return self._catalog.run(fn, *args, **kwargs)


@pytest.fixture
def catalog(catalog_url):
    """One catalog the hosts share: SQLite, and a real PostgreSQL. One database thread, so that
    settle() lets everything queued before it finish (tests/test_downloads.py)."""
    from twisted.internet import reactor

    running = cat.Catalog(catalog_url, reactor, threads=1)
    running.startService()
    yield running
    pytest_twisted.blockon(running.stopService())


async def rows(catalog):
    def read(conn):
        c = jobs.c
        query = select(c.id, c.key, c.state, c.lease_owner, c.lease_url, c.lease_until)
        return [tuple(row) for row in conn.execute(query.order_by(c.id))]

    return await catalog.run(read)


async def stop(*hosts):
    for host in hosts:
        await within(host.manager.stopService())


@pytest_twisted.ensureDeferred
async def test_a_key_another_live_host_holds_is_not_filled_again(catalog):
    a, b = Host(catalog, "a"), Host(catalog, "b")
    try:
        mine = await a.manager.enqueue("http://o/f", "k", "auto")
        theirs = await b.manager.enqueue("http://o/f?again", "k", "auto")
        await settle(catalog)
        assert theirs.elsewhere and theirs.id == mine.id
        assert (theirs.lease.owner, theirs.lease.url) == ("a", "http://a.lab:3000")
        assert list(a.fills.started) == ["http://o/f"] and b.fills.started == {}
        assert b.manager.active("k") is None and b.manager.elsewhere("k") is not None
        # Waiting on another host's job answers at once: nothing here would ever wake it.
        assert (await within(b.manager.wait(theirs))) is theirs
        assert await rows(catalog) == [(mine.id, "k", "running", "a", "http://a.lab:3000",
                                        START + LEASE)]  # fmt: skip
    finally:
        await stop(a, b)


@pytest_twisted.ensureDeferred
async def test_the_owner_renews_its_lease_and_nobody_takes_it_over(catalog):
    a, b = Host(catalog, "a"), Host(catalog, "b")
    try:
        await b.manager.resume()  # from now on b watches for expired leases
        job = await a.manager.enqueue("http://o/f", "k", "auto")
        for _ in range(6):  # 60 s: four leases' worth, renewed every 5 s
            await a.tick(catalog, LEASE / 3)
            await b.tick(catalog, LEASE / 3)
        (row,) = await rows(catalog)
        assert row[2:4] == ("running", "a") and row[5] >= a.clock.seconds()
        assert b.fills.started == {} and b.manager.active("k") is None
        a.fills.started["http://o/f"].callback(None)
        assert (await within(a.manager.wait(job))).state == "completed"
    finally:
        await stop(a, b)


@pytest_twisted.ensureDeferred
async def test_an_expired_lease_is_taken_over_and_its_old_owner_writes_nothing(catalog):
    a, b = Host(catalog, "a"), Host(catalog, "b")
    try:
        await b.manager.resume()
        job = await a.manager.enqueue("http://o/f", "k", "auto")
        await settle(catalog)
        # a stops renewing (its clock stands still: a host frozen, or cut off); b's time passes.
        await b.tick(catalog, LEASE + 1)
        await b.tick(catalog, LEASE / 3)
        taken = b.manager.active("k")
        assert taken is not None and taken.id == job.id
        assert list(b.fills.started) == ["http://o/f"]
        (row,) = await rows(catalog)
        assert row[2:5] == ("running", "b", "http://b.lab:3000")
        # a's next renewal finds the lease gone: its fill is stopped and its row left alone.
        await a.tick(catalog, LEASE / 3)
        stopped = await within(a.manager.wait(job))
        assert stopped.lost and stopped.error == "taken over by another host"
        assert a.fills.cancelled == ["http://o/f"] and a.manager.active("k") is None
        (row,) = await rows(catalog)
        assert row[2:4] == ("running", "b")
        b.fills.started["http://o/f"].callback(None)
        assert (await within(b.manager.wait(taken))).state == "completed"
        assert (await rows(catalog))[0][2:4] == ("completed", "b")
    finally:
        await stop(a, b)


@pytest_twisted.ensureDeferred
async def test_a_miss_on_another_host_takes_over_an_expired_lease_at_once(catalog):
    a, b = Host(catalog, "a"), Host(catalog, "b")
    try:
        job = await a.manager.enqueue("http://o/f", "k", "auto")
        await settle(catalog)
        b.clock.advance(LEASE + 1)  # a dead for longer than its lease; b not yet watching
        taken = await b.manager.enqueue("http://o/f?new", "k", "auto")
        assert not taken.elsewhere and taken.id == job.id
        await settle(catalog)
        # The URL of the miss that took it over: a presigned one's signature may have expired.
        assert list(b.fills.started) == ["http://o/f?new"]
    finally:
        await stop(a, b)


@pytest_twisted.ensureDeferred
async def test_the_commit_checks_the_lease_in_its_own_transaction(catalog):
    a, b = Host(catalog, "a"), Host(catalog, "b")
    try:
        await b.manager.resume()
        job = await a.manager.enqueue("http://o/f", "k", "auto")
        await settle(catalog)
        await b.tick(catalog, LEASE + 1)
        await b.tick(catalog, LEASE / 3)
        assert b.manager.active("k") is not None
        artifact = cat.Artifact("k", "http://o/f", "ab" * 32, 3, None, START)
        # a's fill got to its commit without hearing it lost the lease: nothing is written.
        with pytest.raises(LeaseLost):
            await catalog.run(
                cat.put_artifact, artifact, 0, leases.held_for_commit(job.id, job.token)
            )
        assert await catalog.run(cat.get_artifact, "k") is None
        # The holder's commit goes through, and ends the job in the same transaction.
        held = b.manager.active("k")
        await catalog.run(
            cat.put_artifact, artifact, 0, leases.held_for_commit(held.id, held.token)
        )
        assert (await rows(catalog))[0][2] == "completed"
        assert (await catalog.run(cat.get_artifact, "k")).sha256 == "ab" * 32
    finally:
        await stop(a, b)


@pytest_twisted.ensureDeferred
async def test_a_failed_renewal_changes_nothing_and_the_next_one_carries_on(catalog):
    flaky = FlakyCatalog(catalog)
    a, b = Host(flaky, "a"), Host(catalog, "b")
    try:
        await b.manager.resume()
        job = await a.manager.enqueue("http://o/f", "k", "auto")
        await settle(catalog)
        flaky.down = True
        await a.tick(catalog, LEASE / 3)  # logged as a warning, not an error
        flaky.down = False
        await a.tick(catalog, LEASE / 3)
        await b.tick(catalog, LEASE * 2 / 3 + 1)  # past the first lease, not the renewed one
        assert b.manager.active("k") is None and a.manager.active("k") is job
        a.fills.started["http://o/f"].callback(None)
        assert (await within(a.manager.wait(job))).state == "completed"
    finally:
        await stop(a, b)


@pytest_twisted.ensureDeferred
async def test_a_renewal_that_fails_past_the_lease_loses_the_fill_to_another_host(catalog):
    flaky = FlakyCatalog(catalog)
    a, b = Host(flaky, "a"), Host(catalog, "b")
    try:
        await b.manager.resume()
        job = await a.manager.enqueue("http://o/f", "k", "auto")
        await settle(catalog)
        flaky.down = True
        for _ in range(4):
            await a.tick(catalog, LEASE / 3)
            await b.tick(catalog, LEASE / 3)
        assert b.manager.active("k") is not None  # b took it over meanwhile
        assert a.manager.active("k") is job  # a could not tell yet: it goes on
        flaky.down = False
        await a.tick(catalog, LEASE / 3)
        assert (await within(a.manager.wait(job))).lost
        assert (await rows(catalog))[0][2:4] == ("running", "b")
    finally:
        await stop(a, b)


@pytest_twisted.ensureDeferred
async def test_a_host_that_stops_lets_go_and_another_resumes_at_once(catalog):
    a, b = Host(catalog, "a"), Host(catalog, "b")
    try:
        await b.manager.resume()
        job = await a.manager.enqueue("http://o/f", "k", "auto")
        await settle(catalog)
        await within(a.manager.stopService())
        (row,) = await rows(catalog)
        assert row[2] == "running" and row[5] is None  # left for the next start, lease free
        await b.tick(catalog, LEASE / 3)  # one watch interval, not a whole lease
        taken = b.manager.active("k")
        assert taken is not None and taken.id == job.id
    finally:
        await stop(b)


@pytest_twisted.ensureDeferred
async def test_a_restarted_host_resumes_its_own_fills_without_waiting_for_their_lease(catalog):
    a = Host(catalog, "a")
    job = await a.manager.enqueue("http://o/f", "k", "auto")
    await settle(catalog)
    # Killed: nothing let go of the lease, which has most of its 15 s to run.
    again, other = Host(catalog, "a"), Host(catalog, "b")
    try:
        assert await other.manager.resume() == 0
        assert await again.manager.resume() == 1
        assert again.manager.active("k").id == job.id
    finally:
        await stop(again, other)
        a.manager._stopping = True  # the "killed" one: its timers only
        await a.manager.stopService()


@pytest_twisted.ensureDeferred
async def test_concurrent_claims_of_one_key_on_two_hosts_make_one_job(catalog_url):
    """Each host with a catalog connection pool of its own, as two processes would have."""
    from twisted.internet import reactor

    catalogs = [cat.Catalog(catalog_url, reactor) for _ in range(2)]
    for each in catalogs:
        each.startService()
        await each.run(lambda conn: None)  # made and migrated by the first, one at a time
    a, b = Host(catalogs[0], "a"), Host(catalogs[1], "b")
    try:
        claims = [
            defer.ensureDeferred(host.manager.enqueue(f"http://o/f?{i}", "k", "auto"))
            for i in range(10)
            for host in (a, b)
        ]
        jobs = await within(defer.gatherResults(claims))
        assert len({j.id for j in jobs}) == 1
        assert sum(1 for j in jobs if not j.elsewhere) in (10, 20)  # all of one host's
        for each in catalogs:
            await settle(each)
        assert len(a.fills.started) + len(b.fills.started) == 1
        assert [r[2] for r in await rows(catalogs[0])] == ["running"]
    finally:
        await stop(a, b)
        for each in catalogs:
            await each.stopService()


@pytest_twisted.ensureDeferred
async def test_a_miss_whose_key_another_host_committed_meanwhile_is_not_filled_again(catalog):
    a, b = Host(catalog, "a"), Host(catalog, "b")
    try:
        job = await a.manager.enqueue("http://o/f", "k", "auto")
        await settle(catalog)
        artifact = cat.Artifact("k", "http://o/f", "ab" * 32, 3, None, START)
        await catalog.run(cat.put_artifact, artifact, 0, leases.held_for_commit(job.id, job.token))
        # b's lookup found no artifact just before a's commit; its claim comes just after.
        late = await b.manager.enqueue("http://o/f", "k", "auto", absent=True)
        assert (late.id, late.state, late.elsewhere) == (None, "completed", False)
        await settle(catalog)
        assert b.fills.started == {} and len(await rows(catalog)) == 1
        # Without absent (a stale artifact's refill, say) the key is filled again.
        again = await b.manager.enqueue("http://o/f", "k", "auto")
        assert again.id is not None and again.id != job.id
    finally:
        await stop(a, b)
