"""`Range` headers read as RFC 9110 §14 asks: what is sent, what is ignored, what is 416."""

import pytest

from apiforge.files.sending import MAX_RANGES, RangeNotSatisfiableError, byte_ranges


@pytest.mark.parametrize(
    ("value", "size", "ranges"),
    [
        ("bytes=0-0", 10, [(0, 1)]),
        ("bytes=0-", 10, [(0, 10)]),
        ("bytes=5-100", 10, [(5, 10)]),
        ("bytes=-3", 10, [(7, 10)]),
        ("bytes=-30", 10, [(0, 10)]),
        (f"bytes=0-{'9' * 40}", 10, [(0, 10)]),
        (f"bytes=-{'9' * 40}", 10, [(0, 10)]),
        ("bytes=8-9,0-1", 10, [(8, 10), (0, 2)]),  # disjoint: the order asked
        ("bytes=0-4,3-6,9-", 10, [(0, 7), (9, 10)]),  # overlapping: merged, in file order
        ("bytes=4-5,0-3", 10, [(0, 6)]),  # adjacent: merged
        ("bytes=0-1,20-30", 10, [(0, 2)]),  # the part outside is dropped
        ("Bytes=1-1", 10, [(1, 2)]),
    ],
)
def test_valid_ranges_within_the_file_are_sent(
    value: str, size: int, ranges: list[tuple[int, int]]
) -> None:
    assert byte_ranges(value, size) == ranges


@pytest.mark.parametrize(
    "value",
    [
        "bytes",
        "bytes=",
        "bytes=,",
        "bytes=a-b",
        "bytes=2-1",
        "bytes=-",
        "bytes=1",
        "bytes=\u0661-2",  # an Arabic-Indic digit is no DIGIT
        "bytes=0-1;x",
        "none=0-1",
        "pages=1-2",
        "bytes=" + ",".join(["0-0"] * (MAX_RANGES + 1)),
        "bytes=-5",  # of an empty file: no 206 can describe it
    ],
)
def test_ranges_that_are_not_valid_or_too_many_are_ignored(value: str) -> None:
    size = 0 if value == "bytes=-5" else 10
    assert byte_ranges(value, size) is None


@pytest.mark.parametrize(
    ("value", "size"),
    [("bytes=10-", 10), ("bytes=-0", 10), ("bytes=10-20,30-", 10), ("bytes=0-", 0)],
)
def test_valid_ranges_wholly_outside_the_file_are_416(value: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiableError) as caught:
        byte_ranges(value, size)
    assert (caught.value.status, caught.value.reason) == (416, "range_not_satisfiable")
    assert caught.value.headers == {"Content-Range": f"bytes */{size}"}
    assert caught.value.details == {"size": size}
