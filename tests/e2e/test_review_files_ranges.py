"""Ranges and conditions of a file download (RFC 9110 §13, §14): a `Range` that is not valid
byte-range syntax is ignored (the whole file, 200), one that lies wholly outside the file is
416 in the error envelope with `Content-Range: bytes */<size>`, and `If-None-Match` naming
the file's ETag is 304 without a body."""

from typing import Any

import pytest
from httpx import AsyncClient

from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

DATA = bytes(range(256)) * 8  # 2,048 bytes
SIZE = len(DATA)


async def _file(client: AsyncClient) -> tuple[User, dict[str, Any]]:
    user = await register(client)
    uploaded = await client.post(
        "/api/v1/files", files={"file": ("r.bin", DATA)}, headers=user.headers
    )
    return user, data_of(uploaded)


@pytest.mark.parametrize(
    "value",
    [
        "bytes=abc",
        "bytes=5-2",  # last before first
        "bytes=",
        "bytes=-",
        "bytes=--5",
        "bytes=0--5",
        "bytes=+1-2",
        "bytes=1_0-20",
        "bytes=0-1,abc",  # one bad member spoils the set
        "items=0-1",  # a unit we do not know: MUST be ignored (§14.2)
        "0-1",
    ],
)
async def test_a_range_that_is_not_valid_syntax_is_ignored(client: AsyncClient, value: str) -> None:
    user, file = await _file(client)
    response = await client.get(file["url"], headers={**user.headers, "Range": value})
    assert response.status_code == 200, response.text
    assert response.content == DATA
    assert response.headers["content-length"] == str(SIZE)
    assert response.headers["x-content-md5"] == file["md5"]
    assert "content-range" not in response.headers


@pytest.mark.parametrize(
    "value", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}", "bytes=-0", f"bytes={10**40}-"]
)
async def test_a_range_wholly_outside_the_file_is_416_in_the_envelope(
    client: AsyncClient, value: str
) -> None:
    user, file = await _file(client)
    response = await client.get(file["url"], headers={**user.headers, "Range": value})
    data = assert_error(response, 416, "range_not_satisfiable")
    assert data["size"] == SIZE
    assert response.headers["content-range"] == f"bytes */{SIZE}"
    assert "x-content-md5" not in response.headers
    # HEAD answers the same status and headers.
    head = await client.head(file["url"], headers={**user.headers, "Range": value})
    assert (head.status_code, head.content) == (416, b"")
    assert head.headers["content-range"] == f"bytes */{SIZE}"


async def test_ranges_partly_inside_the_file_send_the_part_inside(client: AsyncClient) -> None:
    """416 only when no range is satisfiable (§15.5.17); the others are sent."""
    user, file = await _file(client)
    for value in (f"bytes=0-1,{SIZE}-{SIZE + 5}", f"bytes={SIZE}-,0-1"):
        response = await client.get(file["url"], headers={**user.headers, "Range": value})
        assert response.status_code == 206, response.text
        assert response.content == DATA[0:2]
        assert response.headers["content-range"] == f"bytes 0-1/{SIZE}"


async def test_ranges_are_served_as_asked(client: AsyncClient) -> None:
    user, file = await _file(client)
    single = {
        "bytes=0-0": (0, 1),
        "bytes=10-19": (10, 20),
        f"bytes=2000-{10**40}": (2000, SIZE),
        "bytes=-10": (SIZE - 10, SIZE),
        f"bytes=-{SIZE * 2}": (0, SIZE),
        "BYTES = 3-4": (3, 5),
        "bytes=10-19, 15-29": (10, 30),  # overlapping ranges merge
        "bytes= ,10-19,": (10, 20),  # empty list members are allowed
    }
    for value, (start, end) in single.items():
        response = await client.get(file["url"], headers={**user.headers, "Range": value})
        assert response.status_code == 206, (value, response.text)
        assert response.content == DATA[start:end], value
        assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{SIZE}", value
        assert response.headers["content-length"] == str(end - start), value
        assert "x-content-md5" not in response.headers

    several = await client.get(file["url"], headers={**user.headers, "Range": "bytes=-2,0-1"})
    assert several.status_code == 206
    content_type = several.headers["content-type"]
    assert content_type.startswith("multipart/byteranges; boundary=")
    boundary = content_type.split("boundary=", 1)[1]
    assert several.headers["content-length"] == str(len(several.content))
    parts = several.content.split(f"--{boundary}".encode())
    assert (parts[0], parts[-1]) == (b"", b"--")
    bodies = [part.split(b"\r\n\r\n", 1) for part in parts[1:-1]]
    # In the order asked (RFC 9110 §14.6), each with the file's type.
    assert [(head.decode().splitlines()[1:], body) for head, body in bodies] == [
        (
            [
                "Content-Type: application/octet-stream",
                f"Content-Range: bytes {SIZE - 2}-{SIZE - 1}/{SIZE}",
            ],
            DATA[-2:] + b"\r\n",
        ),
        (
            ["Content-Type: application/octet-stream", f"Content-Range: bytes 0-1/{SIZE}"],
            DATA[0:2] + b"\r\n",
        ),
    ]


@pytest.mark.parametrize("form", ["exact", "weak", "listed", "any"])
async def test_if_none_match_naming_the_file_is_304_without_a_body(
    client: AsyncClient, form: str
) -> None:
    user, file = await _file(client)
    etag = f'"{file["md5"]}"'
    value = {"exact": etag, "weak": f"W/{etag}", "listed": f'"other", {etag}', "any": "*"}[form]
    for method in ("GET", "HEAD"):
        response = await client.request(
            method, file["url"], headers={**user.headers, "If-None-Match": value}
        )
        assert (response.status_code, response.content) == (304, b""), response.text
        assert response.headers["etag"] == etag
        assert response.headers["cache-control"] == "private"
        assert "content-length" not in response.headers
        assert "content-md5" not in response.headers
    # A range asked with it changes nothing: the client has the file (§13.2.2).
    ranged = await client.get(
        file["url"], headers={**user.headers, "If-None-Match": value, "Range": "bytes=0-1"}
    )
    assert ranged.status_code == 304


async def test_if_none_match_naming_another_tag_sends_the_file(client: AsyncClient) -> None:
    user, file = await _file(client)
    for value in ('"0123"', f'"{file["md5"][:-1]}"', file["md5"], ""):
        response = await client.get(file["url"], headers={**user.headers, "If-None-Match": value})
        assert (response.status_code, response.content) == (200, DATA), value


async def test_if_range_sends_the_range_only_while_the_tag_matches(client: AsyncClient) -> None:
    user, file = await _file(client)
    etag = f'"{file["md5"]}"'
    asked = {**user.headers, "Range": "bytes=2000-"}
    resumed = await client.get(file["url"], headers={**asked, "If-Range": etag})
    assert (resumed.status_code, resumed.content) == (206, DATA[2000:])
    # A weak tag, another tag or a date that is not the file's: the whole file (§13.1.5).
    for value in (f"W/{etag}", '"0123"', "Tue, 01 Jan 2019 00:00:00 GMT"):
        whole = await client.get(file["url"], headers={**asked, "If-Range": value})
        assert (whole.status_code, whole.content) == (200, DATA), value
    # With the tag, a range outside the file is still 416; without a match the whole file.
    outside = {**user.headers, "Range": f"bytes={SIZE}-"}
    assert_error(
        await client.get(file["url"], headers={**outside, "If-Range": etag}),
        416,
        "range_not_satisfiable",
    )
    whole = await client.get(file["url"], headers={**outside, "If-Range": '"0123"'})
    assert (whole.status_code, whole.content) == (200, DATA)


async def test_if_modified_since_is_304_only_without_if_none_match(client: AsyncClient) -> None:
    user, file = await _file(client)
    modified = (await client.get(file["url"], headers=user.headers)).headers["last-modified"]
    for value in (modified, "Fri, 01 Jan 2100 00:00:00 GMT"):
        response = await client.get(
            file["url"], headers={**user.headers, "If-Modified-Since": value}
        )
        assert (response.status_code, response.content) == (304, b""), value
    for value in ("Tue, 01 Jan 2019 00:00:00 GMT", "not a date"):
        response = await client.get(
            file["url"], headers={**user.headers, "If-Modified-Since": value}
        )
        assert (response.status_code, response.content) == (200, DATA), value
    # If-None-Match decides alone when both are sent (§13.1.3).
    both = {"If-Modified-Since": modified, "If-None-Match": '"0123"'}
    response = await client.get(file["url"], headers={**user.headers, **both})
    assert (response.status_code, response.content) == (200, DATA)


async def test_a_text_file_is_sent_with_the_type_given_at_upload(client: AsyncClient) -> None:
    """No charset is added: the bytes are the client's, in whatever encoding it used."""
    user = await register(client)
    uploaded = await client.post(
        "/api/v1/files", files={"file": ("a.txt", b"caf\xe9", "text/plain")}, headers=user.headers
    )
    url = data_of(uploaded)["url"]
    for asked in ({}, {"Range": "bytes=0-1"}):
        response = await client.get(url, headers={**user.headers, **asked})
        assert response.headers["content-type"] == "text/plain", asked
    several = await client.get(url, headers={**user.headers, "Range": "bytes=0-0,2-3"})
    assert several.content.count(b"Content-Type: text/plain\r\n") == 2
