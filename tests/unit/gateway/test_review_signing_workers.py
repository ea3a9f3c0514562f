"""`serve --workers N` without Redis: every worker saves its signed-call nonces to the one file in
the data dir at a graceful stop, and the next start must find all of them, not the last
worker's only (a call another worker accepted could otherwise be replayed after the restart)."""

import json
from pathlib import Path

import pytest

from apiforge.gateway.signing import NONCE_FILE, MemoryNonceStore

TTL = 662


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_workers_saving_to_one_data_dir_keep_every_workers_nonces(tmp_path: Path) -> None:
    path = tmp_path / "data" / NONCE_FILE
    wall = FakeClock(1_700_000_000.0)
    first, second = MemoryNonceStore(FakeClock(10.0), wall), MemoryNonceStore(FakeClock(99.0), wall)
    assert await first.claim("key-a:nonce-first-0000000", TTL)
    assert await second.claim("key-a:nonce-second-000000", TTL)
    assert await second.claim("key-b:nonce-second-000000", TTL)
    first.save(path)
    second.save(path)  # the last to stop
    wall.now += 20
    after = MemoryNonceStore(FakeClock(0.0), wall)
    after.restore(path)
    assert after.not_before == 0
    assert len(after) == 3
    assert not await after.claim("key-a:nonce-first-0000000", TTL)
    assert not await after.claim("key-a:nonce-second-000000", TTL)
    assert not await after.claim("key-b:nonce-second-000000", TTL)
    assert not path.exists()


async def test_a_nonce_saved_twice_keeps_its_latest_expiry_and_expired_ones_are_dropped(
    tmp_path: Path,
) -> None:
    path = tmp_path / NONCE_FILE
    wall = FakeClock(1_700_000_000.0)
    path.write_text(
        json.dumps({"nonces": [["k:shared", wall.now + 10], ["k:gone", wall.now - 1]]}),
        encoding="utf-8",
    )
    store = MemoryNonceStore(FakeClock(0.0), wall)
    assert await store.claim("k:shared", TTL)
    store.save(path)
    saved = dict(json.loads(path.read_text(encoding="utf-8"))["nonces"])
    assert saved == {"k:shared": wall.now + TTL}


def test_an_unreadable_file_of_another_worker_is_left_for_the_next_start_to_distrust(
    tmp_path: Path,
) -> None:
    path = tmp_path / NONCE_FILE
    path.write_text("{", encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):
        MemoryNonceStore().save(path)
    assert path.read_text(encoding="utf-8") == "{"  # the next start refuses earlier calls
    assert {left.name for left in tmp_path.iterdir()} <= {NONCE_FILE, f"{NONCE_FILE}.lock"}
