"""`apiforge db backup` on the embedded database, restored by pointing a real server at the copy:
it serves what the original served (records, keys, sessions, files, stored idempotent answers),
and a backup taken while a server is charging calls and writing records fails none of them and
leaves a copy whose ledger is exact and whose idempotency keys never run a second time."""

import asyncio
import os
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.core.settings import Settings
from apiforge.system.backup import backup
from tests._servers import APIFORGE, running_servers, settings_env
from tests.conftest import DATABASE_URL
from tests.e2e._idempotency import hit, hits_app, total
from tests.e2e._keys import app_key
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import make_admin, register

pytestmark = pytest.mark.skipif(
    bool(DATABASE_URL), reason="`db backup` copies the embedded database (PostgreSQL: pg_dump)"
)

KEY = "Idempotency-Key"
WORKERS = 8


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The secret key in the data dir's `secret.key` (created at start), as a default install
    keeps it: the backup must carry it."""
    return settings.model_copy(update={"secret_key": None})


def _restored(settings: Settings, dest: Path) -> Settings:
    """The settings of a server restored from `dest`: the copy is its data dir."""
    return settings.model_copy(update={"data_dir": dest, "files_dir": None})


async def test_a_server_started_on_a_backup_serves_what_the_original_served(
    app: FastAPI, client: AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    owner, consumer = await register(client), await register(client)
    app_id = await hits_app(client, owner)
    _, secret = await app_key(client, consumer, app_id)
    first = await hit(client, secret, app_id, 7, **{KEY: "before-backup"})
    assert first.status_code == 200, first.text
    uploaded = await client.post(
        "/api/v1/files",
        files={"file": ("notes.txt", b"kept bytes", "text/plain")},
        headers=consumer.headers,
    )
    file_id = data_of(uploaded)["id"]
    dest = tmp_path / "backup"

    summary = await asyncio.to_thread(backup, settings, dest)  # the original still serving

    assert summary.secret == "secret.key"
    assert (summary.files, summary.file_bytes) == (1, len(b"kept bytes"))
    assert summary.answer_files >= 1
    restored = running_servers(_restored(settings, dest), count=1)
    async with restored as (url,), AsyncClient(base_url=url, timeout=30) as copy:
        # the console session (signed with the copied secret.key) and the app key work
        profile = await copy.get("/api/v1/user/profile", headers=consumer.headers)
        assert data_of(profile)["email"] == consumer.email
        assert await total(copy, secret, app_id) == 1
        replay = await hit(copy, secret, app_id, 7, **{KEY: "before-backup"})
        assert replay.headers["Idempotent-Replayed"] == "1"
        assert replay.content == first.content
        assert await total(copy, secret, app_id) == 1  # replayed, not run again
        download = await copy.get(f"/api/v1/files/{file_id}", headers=consumer.headers)
        assert download.status_code == 200
        assert download.content == b"kept bytes"
        fresh = await hit(copy, secret, app_id, 8, **{KEY: "after-restore"})
        assert fresh.status_code == 200
        assert "Idempotent-Replayed" not in fresh.headers
        assert await total(copy, secret, app_id) == 2


async def _backup_command(settings: Settings, dest: Path) -> tuple[int, str, str]:
    """`apiforge db backup DEST` in a process of its own, configured as the server is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIFORGE_")}
    env.update(settings_env(settings))
    process = await asyncio.create_subprocess_exec(
        str(APIFORGE),
        "db",
        "backup",
        str(dest),
        env=env,
        cwd=settings.data_dir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _copy_facts(database: Path) -> tuple[str, list[tuple[str, int, int]], Counter[int]]:
    """The copy's integrity check, the wallets whose balance is not the sum of their ledger
    entries (id, balance, sum), and how many `hits` records each `n` has."""
    with sqlite3.connect(database) as db:
        (verdict,) = db.execute("PRAGMA integrity_check").fetchone()
        wrong = db.execute(
            "SELECT w.id, w.balance, COALESCE(e.total, 0) FROM wallets w LEFT JOIN "
            "(SELECT wallet_id, SUM(amount) AS total FROM ledger_entries GROUP BY wallet_id) e "
            "ON e.wallet_id = w.id WHERE w.balance != COALESCE(e.total, 0)"
        ).fetchall()
        rows = db.execute(
            "SELECT json_extract(r.data, '$.n') FROM records r "
            "JOIN collections c ON c.id = r.collection_id WHERE c.name = 'hits'"
        ).fetchall()
    return str(verdict), wrong, Counter(int(n) for (n,) in rows)


async def test_a_backup_under_load_fails_no_call_and_no_key_of_the_copy_runs_twice(
    app: FastAPI, client: AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    """A real server takes charged, keyed calls that each write a record (`n` unique per key)
    while `apiforge db backup` runs beside it: every call is a 200. A server started on the copy
    finds an intact database with an exact ledger; a retry of each key there replays its answer
    or is refused as lost when the copy holds the key's record, and no `n` is ever written
    twice."""
    owner, consumer = await register(client), await register(client)
    admin = await make_admin(app, client)
    app_id = await hits_app(client, owner)
    _, secret = await app_key(client, consumer, app_id)
    quotas = {"requestsPerMinute": -1, "concurrentRequests": -1, "callsPerMonth": -1}
    await on_plan(client, admin, consumer.workspace_id, "unlimited", **quotas)
    dest = tmp_path / "backup"
    statuses: Counter[int] = Counter()
    numbers = iter(range(1, 10**6))
    issued: list[int] = []
    backed_up = asyncio.Event()
    enough = asyncio.Event()

    async with (
        running_servers(settings, count=1) as (url,),
        AsyncClient(base_url=url, timeout=60) as http,
    ):

        async def worker() -> None:
            after = 0
            while after < 10:  # keep calling until well after the backup ended
                n = next(numbers)
                issued.append(n)
                response = await hit(http, secret, app_id, n, **{KEY: f"k{n}"})
                assert response.status_code == 200, response.text
                statuses[response.status_code] += 1
                if statuses[200] >= 40:
                    enough.set()
                after += backed_up.is_set()

        async def backer() -> tuple[int, str, str]:
            await enough.wait()
            try:
                return await _backup_command(settings, dest)
            finally:
                backed_up.set()

        backing = asyncio.create_task(backer())
        try:
            await asyncio.gather(*(worker() for _ in range(WORKERS)))
        finally:
            backing.cancel()  # a worker failed before the backup could start: not waited for
        code, out, err = await backing
    assert code == 0, err
    assert out.startswith(f"backup written to {dest}: database "), out
    assert out.count("\n") == 1, out
    assert set(statuses) == {200}

    verdict, wrong, before = _copy_facts(dest / "apiforge.db")
    assert verdict == "ok"
    assert wrong == []
    assert 40 <= sum(before.values()) < len(issued)  # the snapshot came mid-load
    assert set(before.values()) == {1}
    outcomes: Counter[str] = Counter()
    restored = running_servers(_restored(settings, dest), count=1)
    async with restored as (url,), AsyncClient(base_url=url, timeout=60) as copy:
        for n in issued:
            again = await hit(copy, secret, app_id, n, **{KEY: f"k{n}"})
            if again.status_code == 409:
                assert_error(again, 409, "idempotency_answer_lost")
                outcomes["lost"] += 1
            elif again.headers.get("Idempotent-Replayed") == "1":
                outcomes["replayed"] += 1
            else:
                # a call made after the snapshot: not in the copy, so it may run there
                assert again.status_code == 200, again.text
                assert n not in before, f"key k{n} ran again on the copy"
                outcomes["ran"] += 1
    verdict, wrong, after = _copy_facts(dest / "apiforge.db")
    assert verdict == "ok"
    assert wrong == []
    assert set(after.values()) == {1}, "a key of the copy ran a second time"
    # Every marker of the snapshot found its record: the log was copied after the snapshot
    # (copied before it, the keys of the calls committed in between would all be lost).
    assert outcomes["lost"] == 0
    assert outcomes["replayed"] >= len(before)
