"""An in-memory stand-in for a boto3 S3 client: the calls withcache.s3store makes, with the
errors botocore raises, and switches for the failures a test wants (a store that is down, a
multipart upload that fails part-way, a store that keeps no checksums, a short object)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from typing import Any

from botocore.exceptions import ClientError, EndpointConnectionError

from withcache.s3store import composite_sha256


def _missing(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "NoSuchKey", "Message": "no such key"}}, operation)


class FakeS3:
    def __init__(self, buckets: tuple[str, ...] = ("b",), checksums: bool = True):
        self.buckets = set(buckets)
        self.objects: dict[tuple[str, str], bytes] = {}
        self.checksums: dict[tuple[str, str], str] = {}
        self.keep_checksums = checksums
        self.down = False
        self.fail_after_parts: int | None = None  # a multipart upload fails after this many
        self.serve_short: int | None = None  # GETs answer with this many bytes fewer
        self.gets = 0
        self.puts = 0

    def _up(self) -> None:
        if self.down:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1/")

    def head_bucket(self, Bucket: str) -> dict:
        self._up()
        if Bucket not in self.buckets:
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadBucket")
        return {}

    def put_object(self, Bucket: str, Key: str, Body: Any, ChecksumSHA256: str, **_: Any) -> dict:
        self._up()
        data = Body.read()
        if base64.b64encode(hashlib.sha256(data).digest()).decode() != ChecksumSHA256:
            raise ClientError({"Error": {"Code": "BadDigest", "Message": "x"}}, "PutObject")
        self.puts += 1
        self.objects[Bucket, Key] = data
        self.checksums[Bucket, Key] = ChecksumSHA256
        return {}

    def upload_file(self, path: str, bucket: str, key: str, ExtraArgs: dict, Config: Any) -> None:
        self._up()
        from s3transfer.utils import ChunksizeAdjuster

        # As the transfer manager does: at least 5 MiB a part, at most 10,000 parts.
        part = ChunksizeAdjuster().adjust_chunksize(
            Config.multipart_chunksize, os.path.getsize(path)
        )
        with open(path, "rb") as f:
            data = f.read()
        parts = (len(data) + part - 1) // part
        if self.fail_after_parts is not None and parts > self.fail_after_parts:
            # What S3Transfer raises when a part fails for good; no object is made.
            from boto3.exceptions import S3UploadFailedError

            raise S3UploadFailedError(f"Failed to upload {path}: part {self.fail_after_parts + 1}")
        self.puts += 1
        self.objects[bucket, key] = data
        self.checksums[bucket, key] = composite_sha256(path, part)

    def head_object(self, Bucket: str, Key: str, **_: Any) -> dict:
        self._up()
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        head: dict[str, Any] = {"ContentLength": len(self.objects[Bucket, Key])}
        if self.keep_checksums:
            head["ChecksumSHA256"] = self.checksums[Bucket, Key]
        return head

    def get_object(self, Bucket: str, Key: str, Range: str | None = None) -> dict:
        self._up()
        self.gets += 1
        data = self.objects.get((Bucket, Key))
        if data is None:
            raise _missing("GetObject")
        if Range is not None:
            first, _, last = Range.removeprefix("bytes=").partition("-")
            data = data[int(first) : int(last) + 1 if last else None]
        length = len(data)
        if self.serve_short:
            data = data[: -self.serve_short]
        return {"Body": io.BytesIO(data), "ContentLength": length}

    def delete_object(self, Bucket: str, Key: str) -> dict:
        self._up()
        self.objects.pop((Bucket, Key), None)
        return {}
