"""A serving worker's root resource in process: hits it finds (through the catalog, then its own
index) are answered by the read path's HitServer over the worker's WorkerCache; everything else
goes to the host (here a stand-in for withcache.web.forward.Forward)."""

from __future__ import annotations

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.web import resource

from tests.support import token, write_file
from tests.web_support import flushed
from withcache import catalog as cat
from withcache.datadir import import_file
from withcache.store import Store
from withcache.web.blobs import HitServer
from withcache.web.worker import WorkerCache, WorkerRoot

URL = "https://vendor.example.com/tool.tar.gz"


class ToTheHost(resource.Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.paths: list[bytes] = []

    def render(self, request):
        self.paths.append(request.uri)
        return b"from the host"


@pytest.fixture
def worker(tmp_path):
    from twisted.internet import reactor

    data = write_file(tmp_path / "tool", 70_000, seed=4)
    store = Store(str(tmp_path / "data"))
    conn = cat.connect(str(tmp_path / "data" / "cache.db"))
    import_file(conn, store, URL, str(data), query="signed", now=reactor.seconds())
    conn.close()
    catalog = cat.Catalog(str(tmp_path / "data" / "cache.db"), reactor)
    catalog.startService()
    cache = WorkerCache(store, catalog, "signed", reactor)
    host = ToTheHost()
    stub = StubTreq(WorkerRoot(cache, HitServer(cache), host))
    yield cache, stub, host, data.read_bytes()
    pytest_twisted.blockon(catalog.stopService())


@pytest_twisted.ensureDeferred
async def test_a_hit_is_learnt_from_the_catalog_then_served_from_the_index(worker):
    cache, stub, host, data = worker
    for _ in range(2):
        response, body = await flushed(stub, "GET", f"/b/{token(URL)}/tool.tar.gz")
        assert (response.code, body) == (200, data)
        assert response.headers.getRawHeaders(b"content-security-policy") == [
            b"sandbox; default-src 'none'"
        ]
    assert cache.index.get(URL) is not None
    assert cache.index.take_hits()[URL].count == 2
    assert cache.served_bytes.value == 2 * len(data)
    assert host.paths == []


@pytest_twisted.ensureDeferred
async def test_a_head_is_served_but_not_counted(worker):
    cache, stub, host, _data = worker
    response, body = await flushed(stub, "HEAD", f"/blob?url={URL}")
    assert (response.code, body) == (200, b"")
    assert host.paths == []
    assert cache.index.take_hits() == {}


@pytest.mark.parametrize(
    "path",
    [
        "/healthz",
        "/b/!!notbase64!!/x",
        f"/b/{token('https://vendor.example.com/missing')}/missing",
        "/blob",
        "/admin/",
    ],
)
@pytest_twisted.ensureDeferred
async def test_what_the_worker_cannot_answer_goes_to_the_host(worker, path):
    _cache, stub, host, _data = worker
    _response, body = await flushed(stub, "GET", path)
    assert body == b"from the host"
    assert host.paths == [path.encode()]


@pytest_twisted.ensureDeferred
async def test_a_blob_gone_under_the_index_makes_the_worker_forget_and_ask_the_host(worker):
    cache, stub, host, _data = worker
    response, _body = await flushed(stub, "GET", f"/b/{token(URL)}/t")
    assert response.code == 200
    hit = cache.cached(URL)
    assert hit is not None
    with open(hit.path, "r+b") as f:
        f.truncate(10)  # not the size the catalog names
    _response, body = await flushed(stub, "GET", f"/b/{token(URL)}/t")
    assert body == b"from the host"
    assert host.paths == [f"/b/{token(URL)}/t".encode()]
    assert cache.index.get(URL) is None
