"""Concurrent deletions of one file: exactly one succeeds, the others answer 404 like any
deletion of a file already gone; the month's upload still counts once."""

import asyncio
from datetime import timedelta

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, select, update

from apiforge.files.models import File
from apiforge.tools.clock import utcnow
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register


async def _upload(client: AsyncClient, user: User) -> str:
    response = await client.post(
        "/api/v1/files", files={"file": ("a.txt", b"abc")}, headers=user.headers
    )
    file_id: str = data_of(response)["id"]
    return file_id


async def _delete_at_once(client: AsyncClient, user: User, file_id: str) -> list[Response]:
    url = f"/api/v1/files/{file_id}"
    return list(await asyncio.gather(*(client.delete(url, headers=user.headers) for _ in range(4))))


def _one_wins(responses: list[Response], file_id: str) -> None:
    won = [r for r in responses if r.status_code == 200]
    assert len(won) == 1, [r.text for r in responses]
    assert data_of(won[0]) == {"id": file_id}
    for lost in responses:
        if lost is not won[0]:
            assert_error(lost, 404, "file_not_found")


@pytest.mark.parametrize("uploaded", ["this_month", "earlier"])
async def test_concurrent_deletes_of_one_file_succeed_once(
    app: FastAPI, client: AsyncClient, uploaded: str
) -> None:
    user = await register(client)
    for _ in range(3):
        file_id = await _upload(client, user)
        if uploaded == "earlier":  # an upload of an earlier month leaves no tombstone
            async with app.state.engine.begin() as connection:
                moved = utcnow() - timedelta(days=62)
                await connection.execute(
                    update(File).where(File.id == file_id).values(created_at=moved)
                )
        _one_wins(await _delete_at_once(client, user, file_id), file_id)
        get = await client.get(f"/api/v1/files/{file_id}", headers=user.headers)
        assert_error(get, 404, "file_not_found")
    async with app.state.engine.connect() as connection:
        stmt = select(func.count()).select_from(File).where(File.deleted_at.is_(None))
        assert await connection.scalar(stmt) == 0
    plans = data_of(await client.get("/api/v1/user/plans", headers=user.headers))
    [usage] = [u for u in plans["usage"] if u["quota"] == "uploadsPerMonth"]
    assert usage["used"] == (3 if uploaded == "this_month" else 0)
