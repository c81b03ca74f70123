"""What a GET with a Range header gets: one pure function of the header and the blob's size.

RFC 9110 section 14 lets a server ignore a Range header (and answer 200 with the whole blob)
and coalesce the ranges it asks for. The read path is open to anyone, so a short header must
not make one request cost many blobs' worth of bytes (`bytes=0-,0-,0-,...` once sent the whole
blob per range):

- more than MAX_RANGES ranges: the header is ignored, as Apache does past MaxRanges and nginx
  past max_ranges;
- the ranges are sorted, and overlapping or adjacent ones merged into one (as Apache 2.4 does);
- several parts whose multipart/byteranges answer (part headers and boundaries included) would
  be longer than the blob: the whole blob, which is shorter.

So no answer to a Range header is ever longer than the blob itself. A header that is malformed
(not ASCII, not `bytes`, a range that is not digits or ends before it starts, no range at all)
is ignored, as RFC 9110 allows, and so is any Range header for a 0-byte blob (no byte of it can
be named). A range that starts past the end is unsatisfiable; if no range is satisfiable the
answer is 416.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Apache's MaxRanges default (set after CVE-2011-3192, the "Range: bytes=0-,5-0,5-1,..." attack).
# Clients that ask for several ranges (PDF viewers, download accelerators) ask for a handful.
MAX_RANGES = 200
# A position longer than this is past the end of any blob (10**18 bytes is an exabyte); reading
# it whole would only cost time (and Python refuses int() of more than 4300 digits).
_MAX_DIGITS = 18
_FAR = 10**_MAX_DIGITS

# (offset, length) of a range of the blob
Span = tuple[int, int]
# (bytes written before the part, offset of the part in the blob, its length): a body for
# withcache.web.filebody.PartsProducer
Part = tuple[bytes, int, int]


def parse_ranges(header: bytes | None, size: int) -> list[Span] | None:
    """The ranges header asks of a blob of size bytes, sorted, with overlapping and adjacent
    ones merged and those that start past the end left out: [] when none is satisfiable (416).
    None when the header is to be ignored and the whole blob answered (200): no header, a
    malformed one, more than MAX_RANGES ranges, or a 0-byte blob."""
    if header is None or size == 0 or not header.isascii():
        return None
    unit, equals, range_set = header.partition(b"=")
    if not equals or unit.strip().lower() != b"bytes":
        return None
    specs = [spec.strip(b" \t") for spec in range_set.split(b",")]
    specs = [spec for spec in specs if spec]  # a list may have empty elements (RFC 9110 5.6.1)
    if not specs or len(specs) > MAX_RANGES:
        return None
    wanted = []
    for spec in specs:
        first, dash, last = spec.partition(b"-")
        if not dash or not (first or last) or not _digits(first) or not _digits(last):
            return None
        if not first:  # `-N`: the last N bytes
            suffix = _number(last)
            if suffix:
                wanted.append((max(0, size - suffix), size))
            continue
        start = _number(first)
        end = _number(last) + 1 if last else size
        if last and end <= start:
            return None  # ends before it starts: the whole header is invalid
        if start < size:
            wanted.append((start, min(end, size)))
    merged: list[list[int]] = []
    for start, end in sorted(wanted):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end - start) for start, end in merged]


def _digits(text: bytes) -> bool:
    return not text or text.isdigit()  # bytes.isdigit is ASCII digits only


def _number(digits: bytes) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else _FAR


@dataclass(frozen=True)
class RangeAnswer:
    """Status, headers and body of the answer to a GET of a blob (HEAD ignores ranges)."""

    code: int  # 200, 206 or 416
    parts: tuple[Part, ...]  # the body
    length: int  # Content-Length
    content_type: bytes
    content_range: bytes | None = None


def answer_ranges(
    header: bytes | None, size: int, content_type: bytes, boundary: bytes | None = None
) -> RangeAnswer:
    """The answer to a GET of a blob of size bytes and content_type with this Range header.
    boundary separates the parts of a multipart answer (random unless given)."""
    spans = parse_ranges(header, size)
    whole = RangeAnswer(200, ((b"", 0, size),), size, content_type)
    if spans is None:
        return whole
    if not spans:
        return RangeAnswer(416, (), 0, content_type, b"bytes */%d" % size)
    if len(spans) == 1:
        ((offset, length),) = spans
        return RangeAnswer(
            206, ((b"", offset, length),), length, content_type, _range(spans[0], size)
        )
    boundary = boundary or os.urandom(12).hex().encode("ascii")
    parts = [
        (
            b"\r\n--%s\r\nContent-Type: %s\r\nContent-Range: %s\r\n\r\n"
            % (boundary, content_type, _range(span, size)),
            *span,
        )
        for span in spans
    ]
    parts.append((b"\r\n--%s--\r\n" % boundary, 0, 0))
    length = sum(len(prefix) + part for prefix, _offset, part in parts)
    if length > size:
        return whole
    multipart = b"multipart/byteranges; boundary=" + boundary
    return RangeAnswer(206, tuple(parts), length, multipart)


def _range(span: Span, size: int) -> bytes:
    offset, length = span
    return b"bytes %d-%d/%d" % (offset, offset + length - 1, size)
