"""An S3-compatible object store holding every blob, with a bounded cache of local copies.

`--store s3://bucket/prefix` (and `--s3-endpoint` for SeaweedFS, MinIO, Ceph…). Objects are
content-addressed like the local store: `<prefix>/<2 hex>/<62 hex>`. Credentials come from
botocore's default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the shared
config files, instance roles), never from the command line; error texts here never carry them.

boto3/botocore is the reference SDK: its transfer manager does multipart uploads with retries,
and botocore's standard retry mode covers throttling and 5xx answers. Its calls block, so every
method here runs in a thread (the caller's bounded pool).

A blob is written to the data dir first (withcache.store.Ingest: hashed as written), then
uploaded by publish(): one PUT carrying the whole body's ChecksumSHA256 (the store checks it)
up to PART_SIZE, else a multipart upload with a SHA256 checksum on each part. Then a HEAD
confirms the object's size and, when the store keeps checksums, its ChecksumSHA256 (the
digest itself, or for a multipart upload the composite of its parts' digests, computed here
from the local copy). A store that keeps no checksums is confirmed by size alone (noted once
in the log). Only then may a catalog row name the blob.

Deleting: an object goes when no row names its digest (delete_unreferenced, asked under the
digest's lock on this host). Another host may be between uploading the same bytes and writing
its row: its object is then deleted under it; its row names a missing object, which the first
non-local hit detects (withcache.blobstore.ObjectMissing: the rows go, a refill uploads again).
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from withcache._log import make_logger
from withcache.blobstore import ObjectMissing, StoreUnavailable
from withcache.localcache import LocalCache
from withcache.scrub import Stopped
from withcache.store import CHUNK, Blob, DigestLock, IntegrityError, Store

log = make_logger()

# Up to this size one PUT carries the whole body's sha256; above it, parts of this size (the
# transfer manager grows them for objects past 10,000 parts).
PART_SIZE = 16 << 20
UPLOAD_CONCURRENCY = 4
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 30.0
MAX_ATTEMPTS = 3
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # no leading or trailing slash; may be empty

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_store_url(url: str) -> S3Location:
    """s3://bucket[/prefix] -> S3Location; ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise ValueError(
            "an s3:// URL names a bucket and a prefix only (credentials come from"
            " AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)"
        )
    return S3Location(parts.netloc, parts.path.strip("/"))


def check_endpoint(url: str) -> str:
    """An http(s) endpoint URL without credentials in it; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    if parts.username or parts.password:
        raise ValueError("credentials do not go in the endpoint URL (use AWS_ACCESS_KEY_ID…)")
    return url


def make_client(endpoint: str | None, region: str | None, pool: int = 16) -> Any:
    """A boto3 S3 client: botocore's default credential chain, standard retries, short
    timeouts (an unreachable store must turn a hit into a miss within the shims' probe)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region or session.region_name or ("us-east-1" if endpoint else None),
        config=Config(
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
            max_pool_connections=pool,
            # Checksums where this module asks for them (SHA256), not botocore's default CRC on
            # every request, which several S3-compatible stores refuse.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"} if endpoint else {},
        ),
    )


def check_bucket(client: Any, location: S3Location) -> None:
    """Raise StoreUnavailable with one clear line unless the bucket is there and ours."""
    try:
        client.head_bucket(Bucket=location.bucket)
    except Exception as e:
        code = _error_code(e)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise StoreUnavailable(f"{location}: no such bucket") from None
        if code in ("403", "AccessDenied", "Forbidden"):
            raise StoreUnavailable(f"{location}: access denied") from None
        raise _unavailable(f"{location}: cannot reach the store", e) from None


def _error_code(e: BaseException) -> str | None:
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", "")) or None
    return None


def _unavailable(what: str, e: BaseException) -> StoreUnavailable:
    code = _error_code(e)
    detail = f"{code}: {e}" if code and code not in str(e) else str(e)
    return StoreUnavailable(f"{what}: {detail or type(e).__name__}")


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def composite_sha256(path: str, part_size: int) -> str:
    """S3's COMPOSITE ChecksumSHA256 of a multipart upload of path in parts of part_size."""
    parts = []
    with open(path, "rb") as f:
        while True:
            h, left = hashlib.sha256(), part_size
            while left and (chunk := f.read(min(CHUNK, left))):
                h.update(chunk)
                left -= len(chunk)
            if left == part_size:
                break
            parts.append(h.digest())
    return f"{_b64(hashlib.sha256(b''.join(parts)).digest())}-{len(parts)}"


class S3Store(Store):
    """Every blob in an S3 bucket; local copies of hot ones in the data dir's blobs/."""

    remote = True

    def __init__(
        self,
        data_dir: str,
        location: S3Location,
        client: Any,
        local_limit: int,
        part_size: int = PART_SIZE,
    ):
        super().__init__(data_dir)
        self.location = location
        self.client = client
        self.local = LocalCache(local_limit)
        self.part_size = part_size
        self._checksums_kept: bool | None = None  # learnt from the first confirmed upload

    def object_key(self, sha256: str) -> str:
        self.path_for(sha256)  # validates it
        rest = f"{sha256[:2]}/{sha256[2:]}"
        return f"{self.location.prefix}/{rest}" if self.location.prefix else rest

    # -- start --------------------------------------------------------------------------

    def load_local(self) -> int:
        """Account for the local copies on disk (least recently used by atime); trim them to
        the limit. Returns how many there are."""
        entries = []
        for sha256 in self.digests():
            try:
                st = os.stat(self.path_for(sha256))
            except FileNotFoundError:
                continue
            entries.append((sha256, st.st_size, max(st.st_atime, st.st_mtime)))
        self.local.load(entries)
        self.trim()
        return len(self.local)

    # -- writing ------------------------------------------------------------------------

    def publish(self, blob: Blob) -> None:
        """Upload a committed local blob and confirm the object (see the module docstring)."""
        path, key = self.path_for(blob.sha256), self.object_key(blob.sha256)
        if self._already_there(blob, path):
            return
        started = time.monotonic()
        try:
            if blob.size <= self.part_size:
                with open(path, "rb") as body:
                    self.client.put_object(
                        Bucket=self.location.bucket,
                        Key=key,
                        Body=body,
                        ContentLength=blob.size,
                        ChecksumSHA256=_b64(bytes.fromhex(blob.sha256)),
                    )
            else:
                from boto3.s3.transfer import TransferConfig

                config = TransferConfig(
                    multipart_threshold=self.part_size,
                    multipart_chunksize=self.part_size,
                    max_concurrency=UPLOAD_CONCURRENCY,
                )
                self.client.upload_file(
                    path,
                    self.location.bucket,
                    key,
                    ExtraArgs={"ChecksumAlgorithm": "SHA256"},
                    Config=config,
                )
            head = self.client.head_object(
                Bucket=self.location.bucket, Key=key, ChecksumMode="ENABLED"
            )
        except Exception as e:
            if isinstance(e, IntegrityError):
                raise
            raise _unavailable(f"upload of {blob.sha256} to {self.location}", e) from None
        self._confirm(blob, head, path)
        log.debug(
            "uploaded {sha256} ({size} bytes) in {seconds:.2f}s",
            sha256=blob.sha256,
            size=blob.size,
            seconds=time.monotonic() - started,
        )

    def _already_there(self, blob: Blob, path: str) -> bool:
        """Whether the store holds these bytes already (the same content under another key,
        or another host's fill), by size and ChecksumSHA256: a HEAD instead of an upload. An
        object without a checksum (written by something else, or a store that keeps none) is
        uploaded over."""
        try:
            head = self.client.head_object(
                Bucket=self.location.bucket,
                Key=self.object_key(blob.sha256),
                ChecksumMode="ENABLED",
            )
            if head.get("ChecksumSHA256") is None:
                return False  # nothing to tell its bytes by: upload ours over it
            self._confirm(blob, head, path)
        except IntegrityError:
            return False  # overwritten with the right bytes
        except Exception as e:
            if _error_code(e) in _MISSING_CODES:
                return False
            raise _unavailable(f"HEAD of {blob.sha256} at {self.location}", e) from None
        return True

    def _confirm(self, blob: Blob, head: dict, path: str) -> None:
        size = head.get("ContentLength")
        if size != blob.size:
            raise IntegrityError(f"the store holds {size} bytes of {blob.sha256}, not {blob.size}")
        checksum = head.get("ChecksumSHA256")
        if checksum is None:
            if self._checksums_kept is None:
                log.info("the object store keeps no SHA256 checksums: uploads confirmed by size")
            self._checksums_kept = False
            return
        self._checksums_kept = True
        if "-" in checksum:
            from s3transfer.utils import ChunksizeAdjuster

            part = ChunksizeAdjuster().adjust_chunksize(self.part_size, blob.size)
            expected = composite_sha256(path, part)
        else:
            expected = _b64(bytes.fromhex(blob.sha256))
        if checksum != expected:
            raise IntegrityError(f"the store's checksum of {blob.sha256} is {checksum}")

    # -- reading ------------------------------------------------------------------------

    def head(self, sha256: str) -> int:
        """The object's size; raises ObjectMissing or StoreUnavailable."""
        try:
            head = self.client.head_object(Bucket=self.location.bucket, Key=self.object_key(sha256))
        except Exception as e:
            if _error_code(e) in _MISSING_CODES:
                raise ObjectMissing(sha256) from None
            raise _unavailable(f"HEAD of {sha256}", e) from None
        return int(head["ContentLength"])

    def open_object(self, sha256: str, first: int = 0, last: int | None = None) -> tuple[Any, int]:
        """A GET of the object (bytes first..last, inclusive, when given): its body (a file-like
        read(n), to close) and how many bytes it says it has."""
        args: dict[str, Any] = {"Bucket": self.location.bucket, "Key": self.object_key(sha256)}
        if first or last is not None:
            args["Range"] = f"bytes={first}-{'' if last is None else last}"
        try:
            response = self.client.get_object(**args)
        except Exception as e:
            if _error_code(e) in _MISSING_CODES:
                raise ObjectMissing(sha256) from None
            raise _unavailable(f"GET of {sha256}", e) from None
        return response["Body"], int(response["ContentLength"])

    # -- the local copies ---------------------------------------------------------------

    def kept_locally(self, sha256: str, size: int) -> None:
        self.local.added(sha256, size)
        self.trim(keep=sha256)

    def touch(self, sha256: str) -> None:
        self.local.touched(sha256)

    def trim(self, keep: str | None = None) -> list[str]:
        """Drop least recently used local copies until under the limit; a copy whose digest
        lock is held (a commit, a delete) is left for the next trim."""
        dropped = []
        for sha256 in self.local.victims(keep):
            locked = self.try_lock(sha256)
            if locked is None:
                continue
            with locked:
                super().delete(sha256)
                self.local.removed(sha256)
                dropped.append(sha256)
        return dropped

    def delete(self, sha256: str) -> bool:
        """Drop the local copy only (the object is delete_unreferenced's to remove)."""
        self.local.removed(sha256)
        return super().delete(sha256)

    def delete_unreferenced(self, sha256: str, is_referenced: Callable[[str], bool]) -> bool:
        """Delete the local copy and the object unless a row names the digest (asked under the
        digest's lock: see Store.delete_unreferenced, and the module docstring for hosts)."""
        claimed = self.claim_unreferenced(sha256, is_referenced)
        return claimed is not None and self.delete_claimed(sha256, claimed)

    def claim_unreferenced(
        self, sha256: str, is_referenced: Callable[[str], bool]
    ) -> DigestLock | None:
        """delete_unreferenced's first half, where the catalog is: unless someone holds the
        digest's lock or a row names it, drop the local copy and return the lock, held, for
        delete_claimed (so the host asks the catalog on its database thread and talks to the
        store on another)."""
        locked = self.try_lock(sha256)
        if locked is None:
            return None
        try:
            if is_referenced(sha256):
                locked.release()
                return None
            self.delete(sha256)
        except BaseException:
            locked.release()
            raise
        return locked

    def delete_claimed(self, sha256: str, locked: DigestLock) -> bool:
        """Delete the object of a digest claim_unreferenced claimed; let go of its lock."""
        with locked:
            try:
                self.client.delete_object(Bucket=self.location.bucket, Key=self.object_key(sha256))
            except Exception as e:
                if _error_code(e) not in _MISSING_CODES:
                    # Left as an orphan object (never named by a row, never served).
                    log.warn("could not delete object {sha256}: {why}", sha256=sha256, why=str(e))
                    return False
            return True

    def quarantine(self, sha256: str) -> str | None:
        self.local.removed(sha256)
        return super().quarantine(sha256)

    def verify(
        self, sha256: str, size: int | None = None, pace: Callable[[int], None] | None = None
    ) -> bool:
        """The scrub's check: a local copy is re-hashed (a bad one is just dropped); the object
        is checked for existence and size with a HEAD (a full re-hash would read every byte
        back over the network each pass). Raises scrub.Stopped when the store cannot say."""
        if self.exists(sha256) and not super().verify(sha256, size, pace):
            log.warn("dropped a bad local copy of {sha256}", sha256=sha256)
            locked = self.try_lock(sha256)
            if locked is not None:
                with locked:
                    self.delete(sha256)
        try:
            stored = self.head(sha256)
        except ObjectMissing:
            return False
        except StoreUnavailable as e:
            # Not a verdict: the scrub tries this blob first again next time.
            raise Stopped(f"the object store did not answer: {e}") from None
        return size is None or stored == size
