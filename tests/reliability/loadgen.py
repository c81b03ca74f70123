"""A load generator for the cache-host: N concurrent HTTP/1.1 clients on asyncio, stdlib only.

    python -m tests.reliability.loadgen < config.json > results.json

Run in a process of its own so the test process is not the bottleneck. Each client keeps its
connection alive for a few requests, then reconnects, and picks one request kind at a time by
weight. Every answer is checked against what that kind must get (see EXPECTED): status, and the
sha256 of every full body, the exact bytes of every Range body. The config (JSON on stdin):

    host, port, clients, duration, seed   where and how hard
    artifacts   [{path, size, seed, sha256}]  hits (bodies are tests.support.payload(size, seed))
    miss_base   an origin URL prefix; "<miss_base><n>" is a URL nobody asked for before
    admin_paths operator pages to load
    weights     {kind: weight}

The results (JSON on stdout): requests, statuses by kind, latency percentiles by kind, bytes
read, the miss URLs asked for, and the unexpected answers (the first 20 and a count).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import random
import sys
import time
from collections import Counter, defaultdict
from urllib.parse import quote

from tests.support import payload

# What each kind of request must be answered with; anything else is unexpected.
EXPECTED = {
    "head": 200,  # a shim's probe of a hit
    "get": 200,  # a full download; its sha256 is checked
    "range": 206,  # one byte range; its bytes are checked
    "revalidate": 304,  # If-None-Match with the artifact's ETag
    "miss": 404,  # a URL nobody asked for before (GET /blob?url= or HEAD /b/<token>/<name>)
    "admin": 200,  # an operator page or fragment (open mode: no password set)
    "healthz": 200,
}
RECONNECT_EVERY = 8
TIMEOUT = 30.0
READ = 1 << 16


class Unexpected(Exception):
    pass


class Client:
    def __init__(self, config: dict, rng: random.Random, results: Results):
        self.config, self.rng, self.results = config, rng, results
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0

    async def run(self, until: float) -> None:
        kinds = list(self.config["weights"])
        weights = [self.config["weights"][k] for k in kinds]
        while time.monotonic() < until:
            kind = self.rng.choices(kinds, weights)[0]
            started = time.monotonic()
            try:
                status = await asyncio.wait_for(getattr(self, kind)(), TIMEOUT)
            except Unexpected as e:
                self.results.unexpected(kind, str(e))
                await self.close()
                continue
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as e:
                self.results.unexpected(kind, f"{type(e).__name__}: {e}")
                await self.close()
                continue
            self.results.record(kind, status, time.monotonic() - started)
        await self.close()

    # -- the request kinds --

    async def head(self) -> int:
        art = self.rng.choice(self.config["artifacts"])
        status, headers, _ = await self.request("HEAD", art["path"])
        self.expect("head", status, art["path"])
        if int(headers.get("content-length", -1)) != art["size"]:
            raise Unexpected(f"HEAD {art['path']}: Content-Length {headers.get('content-length')}")
        if headers.get("x-withcache-sha256") != art["sha256"]:
            raise Unexpected(f"HEAD {art['path']}: digest {headers.get('x-withcache-sha256')}")
        return status

    async def get(self) -> int:
        art = self.rng.choice(self.config["artifacts"])
        status, _, digest = await self.request("GET", art["path"], hash_body=True)
        self.expect("get", status, art["path"])
        if digest != art["sha256"]:
            raise Unexpected(f"GET {art['path']}: body sha256 {digest}")
        return status

    async def range(self) -> int:
        art = self.rng.choice(self.config["artifacts"])
        first = self.rng.randrange(art["size"])
        last = min(art["size"] - 1, first + self.rng.randrange(1 << 18))
        status, headers, body = await self.request(
            "GET", art["path"], {"Range": f"bytes={first}-{last}"}
        )
        self.expect("range", status, art["path"])
        if headers.get("content-range") != f"bytes {first}-{last}/{art['size']}":
            raise Unexpected(f"Range {first}-{last}: Content-Range {headers.get('content-range')}")
        if body != payload(art["size"], art["seed"], first, last + 1):
            raise Unexpected(f"Range {first}-{last} of {art['path']}: wrong bytes")
        return status

    async def revalidate(self) -> int:
        art = self.rng.choice(self.config["artifacts"])
        etag = f'"{art["sha256"]}"'
        status, _, _ = await self.request("GET", art["path"], {"If-None-Match": etag})
        self.expect("revalidate", status, art["path"])
        return status

    async def miss(self) -> int:
        url = self.results.new_miss(self.config["miss_base"])
        if self.rng.random() < 0.5:
            path = "/blob?url=" + quote(url, safe="")
            status, _, _ = await self.request("GET", path)
        else:
            token = base64.urlsafe_b64encode(url.encode()).rstrip(b"=").decode()
            path = f"/b/{token}/miss.bin"
            status, _, _ = await self.request("HEAD", path)
        self.expect("miss", status, url)
        return status

    async def admin(self) -> int:
        path = self.rng.choice(self.config["admin_paths"])
        status, _, body = await self.request("GET", path)
        self.expect("admin", status, path)
        if b"Traceback" in body:
            raise Unexpected(f"GET {path}: a traceback in the page")
        return status

    async def healthz(self) -> int:
        status, _, body = await self.request("GET", "/healthz")
        self.expect("healthz", status, "/healthz")
        if json.loads(body)["status"] != "ok":
            raise Unexpected(f"/healthz said {body!r}")
        return status

    @staticmethod
    def expect(kind: str, status: int, what: str) -> None:
        if status != EXPECTED[kind]:
            raise Unexpected(f"{kind} {what}: status {status}, expected {EXPECTED[kind]}")

    # -- HTTP/1.1 --

    async def request(self, method, path, headers=None, hash_body=False):
        """(status, headers, body or its sha256 hex digest) over a kept-alive connection."""
        if self.writer is None or self.used >= RECONNECT_EVERY:
            await self.close()
            self.reader, self.writer = await asyncio.open_connection(
                self.config["host"], self.config["port"]
            )
            self.used = 0
        self.used += 1
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.config['host']}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        got = {}
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            got[name.strip().lower()] = value.strip()
        body = await self._body(method, status, got, hash_body)
        if got.get("connection", "").lower() == "close":
            await self.close()
        return status, got, body

    async def _body(self, method, status, headers, hash_body):
        sink = hashlib.sha256() if hash_body else None
        parts: list[bytes] = []
        keep = sink.update if sink is not None else parts.append
        if method == "HEAD" or status in (204, 304):
            pass
        elif "content-length" in headers:
            await self._read(int(headers["content-length"]), keep)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self._read(size, keep)
                await self.reader.readexactly(2)
            while await self.reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
        else:
            raise Unexpected(f"status {status} with neither length nor chunks: {headers}")
        return sink.hexdigest() if sink is not None else b"".join(parts)

    async def _read(self, remaining: int, keep) -> None:
        self.results.bytes += remaining
        while remaining:
            chunk = await self.reader.read(min(READ, remaining))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(chunk)
            keep(chunk)

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), TIMEOUT)


class Results:
    def __init__(self, run: str):
        self.run = run
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.bad: list[str] = []
        self.bad_count = 0
        self.misses: list[str] = []
        self.bytes = 0

    def record(self, kind: str, status: int, seconds: float) -> None:
        self.statuses[kind][status] += 1
        self.latencies[kind].append(seconds)

    def unexpected(self, kind: str, what: str) -> None:
        self.statuses[kind]["unexpected"] += 1
        self.bad_count += 1
        if len(self.bad) < 20:
            self.bad.append(what)

    def new_miss(self, base: str) -> str:
        url = f"{base}{self.run}-{len(self.misses)}"
        self.misses.append(url)
        return url

    def summary(self) -> dict:
        def pct(values, p):
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

        return {
            "requests": sum(sum(c.values()) for c in self.statuses.values()),
            "statuses": {k: dict(c) for k, c in self.statuses.items()},
            "latency_ms": {
                k: {"p50": pct(v, 0.50), "p99": pct(v, 0.99), "max": max(v) * 1000}
                for k, v in self.latencies.items()
            },
            "bytes": self.bytes,
            "misses": self.misses,
            "unexpected": self.bad,
            "unexpected_count": self.bad_count,
        }


async def main(config: dict) -> dict:
    rng = random.Random(config["seed"])
    results = Results(f"{config['seed']}")
    until = time.monotonic() + config["duration"]
    clients = [
        Client(config, random.Random(rng.random()), results) for _ in range(config["clients"])
    ]
    await asyncio.gather(*(c.run(until) for c in clients))
    return results.summary()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))
