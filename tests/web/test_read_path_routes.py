"""The read path in process (build_site over a real Cache, one per test): range answers, 304s,
misses, malformed requests, /healthz. tests/test_read_path.py keeps what needs the real host
and the real curl (sendfile bodies, big blobs, TLS, curl's own options)."""

from __future__ import annotations

import json

import pytest
import pytest_twisted

from tests.support import multipart_parts, token, write_file

ensure = pytest_twisted.ensureDeferred
ORIGIN = "https://vendor.example.com/cuda/cuda_12.4.0_linux.run"


async def answer(web, path: str, **headers) -> tuple[int, dict[str, str], bytes]:
    """(status, headers by lower-case name, body) of an anonymous GET."""
    sent = {name.replace("_", "-"): [value] for name, value in headers.items()}
    response, body = await web.request("GET", path, headers=sent)
    fields = {
        k.decode("latin-1").lower(): b", ".join(v).decode("latin-1")
        for k, v in response.headers.getAllRawHeaders()
    }
    if isinstance(response.length, int):
        # Twisted's client keeps Content-Length out of the headers it hands on.
        fields["content-length"] = str(response.length)
    return response.code, fields, body


def blob(url: str) -> str:
    return f"/b/{token(url)}/file"


async def seeded(web, tmp_path, url: str = ORIGIN, size: int = 3 * 1024 * 1024 + 17) -> bytes:
    path = write_file(tmp_path / "artifact.run", size)
    await web.seed(url, path)
    return path.read_bytes()


@ensure
async def test_finding6_a_query_that_selects_content_cannot_poison_another(web, tmp_path):
    """Whoever is first to ask for `tool.sh?version=attacker` does not decide what
    `tool.sh?version=1.2.3` gets: they are two keys."""
    tool = "https://vendor.example.com/tool.sh"
    bad = tmp_path / "bad.sh"
    bad.write_bytes(b"echo pwned\n")
    await web.seed(f"{tool}?version=attacker", bad)
    status, _h, body = await answer(web, blob(f"{tool}?version=1.2.3"))
    assert status == 404 and b"pwned" not in body
    (count,) = await web.catalog.run(
        lambda conn: conn.exec_driver_sql(
            "SELECT count FROM misses WHERE key = ?", (f"{tool}?version=1.2.3",)
        ).fetchone()
    )
    assert count == 1
    assert (await answer(web, blob(f"{tool}?version=attacker")))[2] == b"echo pwned\n"


@ensure
async def test_range_amplification_500_whole_blob_ranges_send_the_blob_at_most_once(web, tmp_path):
    """`bytes=0-,0-,0-,...` (a short header) used to send the blob once per range."""
    url = "https://vendor.example.com/amplified.bin"
    data = await seeded(web, tmp_path, url, 200_000)
    for count in (2, 150, 500):
        status, _h, body = await answer(web, blob(url), Range="bytes=" + ",".join(["0-"] * count))
        assert len(body) <= len(data), count
        assert body == data and status in (200, 206), count


@ensure
async def test_range_amplification_overlapping_and_adjacent_ranges_are_coalesced(web, tmp_path):
    data = await seeded(web, tmp_path)
    ranges = "bytes=1000-1099,0-99,50-149,150-199,1050-1060"
    status, h, body = await answer(web, blob(ORIGIN), Range=ranges)
    assert status == 206 and h["content-type"].startswith("multipart/byteranges")
    size = len(data)
    assert multipart_parts(body, size) == [(0, 199, data[:200]), (1000, 1099, data[1000:1100])]
    status, h, body = await answer(web, blob(ORIGIN), Range="bytes=10-19,0-9,15-29")
    assert (status, h["content-range"], body) == (206, f"bytes 0-29/{size}", data[:30])


@ensure
async def test_range_amplification_parts_longer_than_the_blob_get_the_whole_blob(web, tmp_path):
    """Tiny ranges with gaps between them cannot be coalesced; their part headers would make the
    answer many times the blob: the whole blob (200) is shorter."""
    url = "https://vendor.example.com/small.bin"
    data = await seeded(web, tmp_path, url, 1_000)
    ranges = "bytes=" + ",".join(f"{i}-{i}" for i in range(0, 300, 2))
    status, h, body = await answer(web, blob(url), Range=ranges)
    assert (status, body) == (200, data) and h["content-type"] == "application/octet-stream"


@ensure
async def test_range_amplification_more_ranges_than_the_limit_get_the_whole_blob(web, tmp_path):
    data = await seeded(web, tmp_path)
    ranges = "bytes=" + ",".join(f"{i * 10_000}-{i * 10_000}" for i in range(201))
    status, _h, body = await answer(web, blob(ORIGIN), Range=ranges)
    assert (status, len(body)) == (200, len(data)) and body == data


@ensure
async def test_multi_range_on_a_zero_byte_blob_is_not_a_500(web, tmp_path):
    url = "https://vendor.example.com/empty.bin"
    await seeded(web, tmp_path, url, 0)
    for ranges in ("bytes=0-0,1-1", "bytes=0-,-5", "bytes=-1", "bytes=0-0"):
        status, h, body = await answer(web, blob(url), Range=ranges)
        assert (status, h["content-length"], body) == (200, "0", b""), ranges


@ensure
async def test_multi_range_with_nothing_satisfiable_is_a_416(web, tmp_path):
    size = len(await seeded(web, tmp_path))
    ranges = f"bytes={size}-,{size + 10}-{size + 20}"
    status, h, _body = await answer(web, blob(ORIGIN), Range=ranges)
    assert (status, h["content-range"]) == (416, f"bytes */{size}")


@ensure
async def test_unsatisfiable_range_is_a_416(web, tmp_path):
    size = len(await seeded(web, tmp_path))
    status, h, _body = await answer(web, blob(ORIGIN), Range=f"bytes={size + 10}-")
    assert (status, h["content-range"]) == (416, f"bytes */{size}")


@ensure
async def test_matching_if_none_match_is_a_304(web, tmp_path):
    await seeded(web, tmp_path)
    digest = (await web.cache.artifact(ORIGIN)).sha256
    for tags in (f'"{digest}"', f'"other", "{digest}"', f'W/"{digest}"', "*"):
        status, _h, body = await answer(web, blob(ORIGIN), If_None_Match=tags)
        assert (status, body) == (304, b""), tags
    assert (await answer(web, blob(ORIGIN), If_None_Match='"x"'))[0] == 200


@ensure
async def test_a_miss_is_a_404_with_one_line_and_is_recorded(web):
    url = "https://vendor.example.com/rocm/amdgpu-install_6.1.deb?X-Amz-Signature=1"
    status, _h, body = await answer(web, blob(url))
    assert status == 404
    assert body.count(b"\n") == 1 and b"not cached" in body
    await web.request("HEAD", blob(url.replace("Signature=1", "Signature=2")))
    key = "https://vendor.example.com/rocm/amdgpu-install_6.1.deb"
    (url_seen, count, first, last) = await web.catalog.run(
        lambda conn: conn.exec_driver_sql(
            "SELECT url, count, first_seen, last_seen FROM misses WHERE key = ?", (key,)
        ).fetchone()
    )
    assert count == 2 and first <= last and url_seen.endswith("Signature=2")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/b/!!notbase64!!/x", "malformed token"),
        ("/b/a/x", "malformed token"),
        (f"/b/{token('ftp://vendor.example.com/f')}/f", "only http and https"),
        (f"/b/{token('not a url')}/f", "whitespace"),
        ("/blob", "missing url"),
        ("/blob?url=", "missing url"),
        ("/blob?url=https://a.example/1&url=https://a.example/2", "more than one url"),
        ("/blob?url=%FF", "not UTF-8"),
        ("/blob?url=file:///etc/passwd", "only http and https"),
        ("/blob?url=https://user:pw@vendor.example.com/f", "credentials"),
        (f"/b/{token('https://vendor.example.com/f?access_token=SECRET')}/f", "credentials"),
        ("/blob?url=https://vendor.example.com/f%3Fapi_key%3DSECRET", "credentials"),
    ],
)
@ensure
async def test_bad_requests_are_400_with_a_one_line_reason(web, path, reason):
    status, h, body = await answer(web, path)
    assert status == 400
    assert h["content-type"].startswith("text/plain")
    assert h["content-security-policy"] == "sandbox; default-src 'none'"
    assert body.count(b"\n") == 1 and reason.encode() in body
    assert b"Traceback" not in body and b"SECRET" not in body


@ensure
async def test_healthz_is_json(web):
    status, h, body = await answer(web, "/healthz")
    assert status == 200 and h["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc["status"] == "ok" and doc["version"]


@ensure
async def test_a_catalog_that_cannot_answer_is_a_503_to_try_again_not_an_error(
    web, monkeypatch, no_logged_errors
):
    """A PostgreSQL restart, a SQLite lock held too long: the miss answers 503 (a shim then
    goes to the origin), and nothing is logged as an error."""
    from sqlalchemy.exc import OperationalError
    from twisted.internet import defer

    def unavailable(fn, *args, **kwargs):
        return defer.fail(OperationalError("SELECT", {}, Exception("server closed the connection")))

    monkeypatch.setattr(web.catalog, "run", unavailable)
    status, headers, body = await answer(web, blob("https://vendor.example.com/new.run"))
    assert (status, headers["retry-after"]) == (503, "1")
    assert body == b"catalog unavailable; try again\n"
    assert no_logged_errors == []
