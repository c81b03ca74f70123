"""Shared fixtures: fail on logged errors, the real host under twistd, a plain origin."""

from __future__ import annotations

import pytest
from twisted.logger import globalLogPublisher

from tests.support import Host, Origin, assert_clean_log, start_host, start_origin

# postgres_server, postgres_url and catalog_url (both backends): a real PostgreSQL.
pytest_plugins = ["tests.engines.postgres"]


@pytest.fixture(autouse=True)
def no_logged_errors():
    """Fail a test when Twisted logged an error during it, as trial would."""
    errors = []

    def observer(event):
        if event.get("log_failure") is not None or event.get("isError"):
            errors.append(event)

    globalLogPublisher.addObserver(observer)
    yield errors
    globalLogPublisher.removeObserver(observer)
    if errors:
        failure = errors[0].get("log_failure")
        detail = failure.getTraceback() if failure is not None else repr(errors[0])
        pytest.fail(f"{len(errors)} error(s) logged; first:\n{detail}")


@pytest.fixture
def host(tmp_path) -> Host:
    """A fresh cache-host (twistd -n withcache) on its own data dir.

    Curating, so a miss is recorded and nothing is fetched: tests name made-up vendor hosts, and
    a fill would resolve them. Fill tests start hosts of their own.
    """
    running = start_host(tmp_path / "data", "--curate")
    try:
        yield running
    finally:
        running.stop()
    assert_clean_log(running)


@pytest.fixture
def origin() -> Origin:
    running = start_origin()
    yield running
    running.server.shutdown()
    running.server.server_close()
