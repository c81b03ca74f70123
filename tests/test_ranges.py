"""withcache.web.ranges: which bytes a Range header gets, within the limits an open host needs."""

from __future__ import annotations

import pytest

from withcache.web.ranges import MAX_RANGES, answer_ranges, parse_ranges

SIZE = 1000
IGNORED = None  # the whole blob, 200
UNSATISFIABLE: list = []  # 416


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, IGNORED),
        (b"bytes=0-9", [(0, 10)]),
        (b"bytes=990-", [(990, 10)]),
        (b"bytes=990-5000", [(990, 10)]),
        (b"bytes=-10", [(990, 10)]),
        (b"bytes=-5000", [(0, SIZE)]),  # a suffix longer than the blob is the whole blob
        (b"bytes=0-0", [(0, 1)]),
        (b"BYTES = 0-9", [(0, 10)]),  # the unit is case-insensitive
        (b"bytes= 0-9 ,\t10-19 ", [(0, 20)]),  # spaces around list elements
        (b"bytes=0-9,,", [(0, 10)]),  # empty list elements are ignored
        # sorted, overlapping and adjacent ranges merged
        (b"bytes=500-509,0-9", [(0, 10), (500, 10)]),
        (b"bytes=0-99,50-149,150-199,300-", [(0, 200), (300, 700)]),
        (b"bytes=10-19,0-9", [(0, 20)]),
        (b"bytes=0-9,11-19", [(0, 10), (11, 9)]),  # a gap: kept apart
        (b"bytes=" + b",".join([b"0-"] * 500), IGNORED),  # over the limit
        (b"bytes=" + b",".join([b"0-"] * MAX_RANGES), [(0, SIZE)]),
        (b"bytes=0-,0-,-1000,0-999", [(0, SIZE)]),
        (b"bytes=-1,-1,-1", [(999, 1)]),
        # unsatisfiable ones are left out; none left is a 416
        (b"bytes=1000-", UNSATISFIABLE),
        (b"bytes=1000-,2000-3000", UNSATISFIABLE),
        (b"bytes=-0", UNSATISFIABLE),
        (b"bytes=-0,1000-", UNSATISFIABLE),
        (b"bytes=-0,5-5", [(5, 1)]),
        (b"bytes=1000-1005,0-0", [(0, 1)]),
        (b"bytes=" + b"9" * 5000 + b"-", UNSATISFIABLE),  # far past the end, read quickly
        (b"bytes=0-" + b"9" * 5000, [(0, SIZE)]),
        (b"bytes=-" + b"9" * 5000, [(0, SIZE)]),
        # malformed: the header is ignored
        (b"bytes=", IGNORED),
        (b"bytes=,", IGNORED),
        (b"bytes", IGNORED),
        (b"items=0-9", IGNORED),
        (b"bytes=-", IGNORED),
        (b"bytes=5", IGNORED),
        (b"bytes=9-0", IGNORED),  # ends before it starts
        (b"bytes=0-9,9-0", IGNORED),
        (b"bytes=" + b"9" * 30 + b"-5", IGNORED),
        (b"bytes=0-1-2", IGNORED),
        (b"bytes=a-b", IGNORED),
        (b"bytes=+1-2", IGNORED),
        (b"bytes=0x1-2", IGNORED),
        (b"bytes=0 - 9", IGNORED),
        (b"bytes=\xd9\xa1-2", IGNORED),  # not ASCII (an Arabic-Indic digit)
        (b"bytes=\xff-\x00", IGNORED),
    ],
)
def test_parse_ranges(header, expected):
    assert parse_ranges(header, SIZE) == expected


@pytest.mark.parametrize("header", [b"bytes=0-0", b"bytes=0-0,1-1", b"bytes=-5", b"bytes=1-"])
def test_range_on_a_zero_byte_blob_is_ignored(header):
    assert parse_ranges(header, 0) is None
    assert answer_ranges(header, 0, b"text/plain") == answer_ranges(None, 0, b"text/plain")


def test_answer_whole_blob():
    answer = answer_ranges(b"bytes=9-0", SIZE, b"text/plain")
    assert (answer.code, answer.parts, answer.length) == (200, ((b"", 0, SIZE),), SIZE)
    assert (answer.content_type, answer.content_range) == (b"text/plain", None)


def test_answer_one_range():
    answer = answer_ranges(b"bytes=10-19,15-24", SIZE, b"text/plain")
    assert (answer.code, answer.parts, answer.length) == (206, ((b"", 10, 15),), 15)
    assert (answer.content_type, answer.content_range) == (b"text/plain", b"bytes 10-24/1000")


def test_answer_nothing_satisfiable():
    answer = answer_ranges(b"bytes=1000-,2000-", SIZE, b"text/plain")
    assert (answer.code, answer.parts, answer.length) == (416, (), 0)
    assert answer.content_range == b"bytes */1000"


def test_answer_several_ranges_is_multipart_in_the_blobs_order():
    answer = answer_ranges(b"bytes=500-509,0-9", SIZE, b"text/plain", b"B0UND")
    assert answer.code == 206 and answer.content_range is None
    assert answer.content_type == b"multipart/byteranges; boundary=B0UND"
    assert answer.parts == (
        (
            b"\r\n--B0UND\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-9/1000\r\n\r\n",
            0,
            10,
        ),
        (
            b"\r\n--B0UND\r\nContent-Type: text/plain\r\nContent-Range: bytes 500-509/1000\r\n\r\n",
            500,
            10,
        ),
        (b"\r\n--B0UND--\r\n", 0, 0),
    )
    assert answer.length == sum(len(prefix) + length for prefix, _offset, length in answer.parts)


def test_answer_random_boundaries_differ():
    first, second = (answer_ranges(b"bytes=0-0,9-9", SIZE, b"a/b") for _ in range(2))
    assert first.content_type != second.content_type


def test_range_amplification_parts_longer_than_the_blob_are_the_whole_blob():
    """No answer to a Range header is longer than the blob: parts whose headers would make it
    so (tiny ranges with gaps between them) get the whole blob."""
    header = b"bytes=" + b",".join(b"%d-%d" % (i, i) for i in range(0, 40, 2))
    assert len(parse_ranges(header, SIZE)) == 20
    answer = answer_ranges(header, SIZE, b"text/plain")
    assert (answer.code, answer.length) == (200, SIZE)
    assert answer_ranges(header, 100_000, b"text/plain").code == 206


@pytest.mark.parametrize(
    "header",
    [b"bytes=" + b",".join([b"0-"] * n) for n in (2, MAX_RANGES, MAX_RANGES + 1, 500, 5000)]
    + [b"bytes=" + b",".join(b"%d-%d" % (i, i + 1) for i in range(0, 2 * n, 3)) for n in (5, 199)]
    + [b"bytes=" + b",".join(b"-%d" % n for n in range(1, 300))],
)
@pytest.mark.parametrize("size", [1, 2, 10, 1000, 1 << 20])
def test_range_amplification_no_answer_is_longer_than_the_blob(header, size):
    answer = answer_ranges(header, size, b"application/octet-stream")
    assert answer.length <= size
    assert answer.length == sum(len(prefix) + length for prefix, _offset, length in answer.parts)
