"""The audit log end to end: each state change is one event with the right actor and address."""

from __future__ import annotations

import pytest

from tests.api_support import admin, call, make_token
from tests.support import OriginProcess, assert_clean_log, eventually, write_file
from tests.ui.ui_support import Client, start_ui_host


@pytest.fixture
def origin():
    running = OriginProcess()
    yield running
    running.stop()


def events(host, secret, **filters):
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    got = call(host.url, "GET", f"/api/v1/events?limit=1000&{query}", secret)
    assert got.status == 200, got
    return got.doc["items"]


def by_action(host, secret) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for e in events(host, secret):
        found.setdefault(e["action"], []).append(e)
    return found


def test_every_kind_of_state_change_is_one_event_with_its_actor(tmp_path, origin):
    data = tmp_path / "data"
    data.mkdir()
    boss = make_token(data, "boss", "admin")
    ci = make_token(data, "ci", "fill")
    seeded = write_file(tmp_path / "seed", 5000)
    admin("import", "https://vendor.example.com/seeded.bin", str(seeded), data_dir=data)
    host = start_ui_host(data, "--curate", "--allow-private")
    try:
        api = host.url
        good, bad = f"{origin.base}/f/3000/1/good.bin", f"{origin.base}/f/10/1/bad.bin?fail=404"
        slow = f"{origin.base}/f/10/2/slow.bin?delay=60"
        done = call(api, "POST", "/api/v1/fills", ci, body={"url": good}).doc
        failed = call(api, "POST", "/api/v1/fills", ci, body={"url": bad}).doc
        waiting = call(api, "POST", "/api/v1/fills", ci, body={"url": slow}).doc
        for job in (done, failed):
            eventually(
                lambda j=job: call(api, "GET", f"/api/v1/fills/{j['id']}", ci).doc["state"],
                lambda state: state in ("completed", "failed"),
                timeout=60,
                what="the fill to end",
            )
        cancel = call(api, "DELETE", f"/api/v1/fills/{waiting['id']}", ci)
        assert cancel.status == 202
        again = call(api, "DELETE", f"/api/v1/fills/{waiting['id']}", ci)
        assert again.status == 409 and again.doc["type"].endswith("fill-finished")
        key = "https://vendor.example.com/seeded.bin"
        assert call(api, "PUT", f"/api/v1/artifact/pin?key={key}", boss).status == 200
        assert call(api, "DELETE", f"/api/v1/artifact/pin?key={key}", boss).status == 200
        assert call(api, "DELETE", f"/api/v1/artifact?key={key}", boss).status == 200
        host.get("/blob?url=https://vendor.example.com/missing.iso")  # a miss (curating)
        miss = "https://vendor.example.com/missing.iso"
        assert call(api, "DELETE", f"/api/v1/miss?url={miss}", ci).status == 200
        made = call(api, "POST", "/api/v1/tokens", boss, body={"name": "tmp", "scopes": ["read"]})
        assert made.status == 201
        assert call(api, "DELETE", "/api/v1/tokens/tmp", boss).status == 200
        browser = Client(host.url)
        browser.login("wrong password")
        assert browser.login().status == 303
        browser.get("/")
        browser.post("/logout")

        def complete(found):
            wanted = {"fill.completed", "fill.failed", "fill.cancelled", "logout"}
            return wanted <= set(found)

        found = eventually(lambda: by_action(host, boss), complete, what="all events")
    finally:
        host.stop()
    assert_clean_log(host)

    def one(action):
        assert len(found[action]) == 1, found[action]
        return found[action][0]

    assert {e["subject"] for e in found["fill.queued"]} == {good, bad, slow}
    assert {e["actor"] for e in found["fill.queued"]} == {"token:ci"}
    assert {e["client"] for e in found["fill.queued"]} == {"127.0.0.1"}
    assert one("fill.completed")["actor"] == "host" and one("fill.completed")["subject"] == good
    assert one("fill.failed")["outcome"] == "failed" and "404" in one("fill.failed")["detail"]
    assert one("fill.cancelled")["actor"] == "token:ci"
    for action in ("artifact.pinned", "artifact.unpinned", "artifact.deleted"):
        assert one(action)["actor"] == "token:boss" and one(action)["subject"] == key
    assert one("miss.dismissed")["actor"] == "token:ci"
    assert [e["actor"] for e in found["token.created"]] == [
        "token:boss",
        "withcache-admin",
        "withcache-admin",
    ]
    assert one("token.revoked")["subject"] == "tmp"
    assert one("artifact.imported")["actor"] == "withcache-admin"
    assert one("login.failed")["outcome"] == "failed" and one("login.failed")["actor"] == "operator"
    assert one("login.succeeded")["client"] == "127.0.0.1"
    assert one("logout")["actor"] == "operator"


def test_a_truncated_blob_quarantined_by_the_host_is_an_event_of_the_host(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    boss = make_token(data, "boss", "admin")
    path = write_file(tmp_path / "seed", 200_000)
    out = admin("import", "https://vendor.example.com/short.bin", str(path), data_dir=data)
    digest = out.stdout.split()[0]
    with open(data / "blobs" / digest[:2] / digest[2:], "r+b") as blob:
        blob.truncate(100)
    host = start_ui_host(data, "--curate", "--scrub-interval", "0")
    try:
        assert host.get("/blob?url=https://vendor.example.com/short.bin")[0] == 404
        found = eventually(
            lambda: events(host, boss, action="artifact.quarantined"), bool, what="the event"
        )
    finally:
        host.stop()
    assert found[0]["actor"] == "host" and found[0]["subject"].endswith("short.bin")
    assert "size on disk is wrong" in found[0]["detail"]


def test_retention_keeps_the_newest_events_by_count(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for n in range(5):
        make_token(data, f"t{n}", "read")
    boss = make_token(data, "boss", "admin")
    host = start_ui_host(data, "--events-max-count", "3")
    try:
        kept = eventually(lambda: events(host, boss), lambda e: len(e) == 3, what="pruning")
    finally:
        host.stop()
    assert [e["subject"] for e in kept] == ["boss", "t4", "t3"]
