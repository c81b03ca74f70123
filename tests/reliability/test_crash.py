"""Crash: kill -9 at random moments during concurrent fills and reads, restart, and check.

One data dir lives through every trial. A trial starts fills of new URLs (throttled by the
origin, so some are in flight and some committing when the blow lands) while a reader fetches
what is already cached, kills the host with SIGKILL after a random delay, and then checks:
every listed artifact's blob has the listed size and digest and `PRAGMA integrity_check` is ok
(before and after the restart), no partial file survives the restart, and the jobs the kill
interrupted finish and serve the right bytes. The random moments come from a seed that is
printed (and taken from $RELIABILITY_SEED when set, to replay a run).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import signal
import threading
import time
import urllib.error

import pytest

from tests.reliability.common import (
    check_data_dir,
    expected_sha256,
    jobs_by_url,
    serves,
    wait_until,
)
from tests.support import MIB, assert_clean_log, start_host, token

# A miss answers 404 at once (no wait for a stream): the trials count on it.
HOST_ARGS = ("--allow-private", "--workers", "3", "--stream-wait", "0")
# (size, origin rate in bytes/s or 0 for full speed) of the fills each trial starts.
FILLS = [(3 * MIB, 1_500_000), (MIB, 1_000_000), (512 * 1024, 0)]
MAX_DELAY = 2.5  # seconds from the first miss to the kill


class Reader(threading.Thread):
    """GETs cached artifacts in a loop until stopped; a complete 200 must be the right bytes."""

    def __init__(self, host, cached: dict[str, tuple[int, int]], rng: random.Random):
        super().__init__(daemon=True)
        self.host, self.cached, self.rng = host, dict(cached), rng
        self.stopping = threading.Event()
        self.served = 0
        self.wrong: list[str] = []

    def run(self) -> None:
        while self.cached and not self.stopping.is_set():
            url = self.rng.choice(sorted(self.cached))
            size, seed = self.cached[url]
            try:
                status, body = self.host.get(f"/b/{token(url)}/x", timeout=10)
            except (OSError, http.client.HTTPException, urllib.error.URLError):
                continue  # the host is being killed: a cut-off answer is expected
            if status == 200:
                self.served += 1
                if hashlib.sha256(body).hexdigest() != expected_sha256(size, seed):
                    self.wrong.append(url)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)
        assert not self.is_alive()


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("RELIABILITY_SEED") or time.time_ns() % 1_000_000)
    print(f"crash test seed: {value} (RELIABILITY_SEED={value} replays it)")
    return value


class Trials:
    """The host and what is cached, carried from one trial to the next."""

    def __init__(self, data, origin, seed: int):
        self.data, self.origin, self.seed = data, origin, seed
        self.rng = random.Random(seed)
        self.cached: dict[str, tuple[int, int]] = {}  # origin URL -> (size, payload seed)
        self.host = start_host(data, *HOST_ARGS)

    def run(self, trial: int) -> dict:
        where = f"seed {self.seed} trial {trial}"
        started = {
            f"{self.origin.base}/f/{size}/{trial}/crash-{self.seed}-{i}?rate={rate}": (size, trial)
            for i, (size, rate) in enumerate(FILLS)
        }
        reader = Reader(self.host, self.cached, self.rng)
        reader.start()
        for url in started:
            assert self.host.get(f"/b/{token(url)}/x")[0] == 404
        delay = self.rng.uniform(0.0, MAX_DELAY)
        time.sleep(delay)  # the random moment itself: nothing to wait for
        assert self.host.stop(signal.SIGKILL) == -signal.SIGKILL
        assert_clean_log(self.host)
        reader.stop()
        assert reader.wrong == [], f"{where}: wrong bodies served"
        partial = set(os.listdir(self.data / "tmp"))
        listed = check_data_dir(self.data)
        jobs = jobs_by_url(self.data)
        interrupted = [u for u in started if jobs.get(u, ("",))[0] in ("queued", "running")]

        self.host = start_host(self.data, *HOST_ARGS)
        self.host.wait_for_log("recovered data dir")
        assert not partial & set(os.listdir(self.data / "tmp")), where
        check_data_dir(self.data)
        for url in started:
            if url in jobs:  # a kill before the job's row was written leaves no job
                self.wait_served(url, *started[url])
                self.cached[url] = started[url]
        jobs = jobs_by_url(self.data)
        assert [jobs[u][0] for u in interrupted] == ["completed"] * len(interrupted), where
        return {
            "kill_after_s": round(delay, 2),
            "listed_at_kill": len(listed),
            "interrupted": len(interrupted),
            "reads_served": reader.served,
        }

    def wait_served(self, url: str, size: int, seed: int) -> None:
        wait_until(lambda: serves(self.host, url, size, seed), 60, f"{url} is cached")


def test_kill_9_at_random_moments_never_leaves_a_bad_artifact_and_resumes_the_fills(
    tmp_path, origin, form, figures, seed
):
    trials = Trials(tmp_path / "data", origin, seed)
    try:
        outcomes = [trials.run(n) for n in range(form.crash_trials)]
        final = check_data_dir(trials.data)
    finally:
        trials.host.stop()
    assert_clean_log(trials.host)
    assert {row["url"] for row in final} == set(trials.cached)
    figures["crash"] = {
        "seed": seed,
        "trials": len(outcomes),
        "interrupted_jobs_resumed": sum(o["interrupted"] for o in outcomes),
        "artifacts_at_end": len(final),
        "outcomes": outcomes,
    }
