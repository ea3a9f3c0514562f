"""new_id: sortable by time, 80 random bits from os.urandom (batched), never repeated — also
across threads and in a forked child."""

import os
import threading
import time

from apiforge.tools.ids import is_id, new_id


def test_ids_are_well_formed_and_sort_by_time() -> None:
    first = new_id()
    time.sleep(0.002)
    second = new_id()
    assert is_id(first)
    assert is_id(second)
    assert first < second
    assert not is_id(first[:-1])
    assert not is_id(first.upper())


def test_no_repeats_across_threads_and_batches() -> None:
    seen: list[str] = []

    def make() -> None:
        seen.extend(new_id() for _ in range(5000))  # several 4 KB batches per thread

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == len(set(seen)) == 20_000
    randomness = {i[10:] for i in seen}  # the random part alone never repeats either
    assert len(randomness) == 20_000


def test_a_forked_child_does_not_reuse_the_parents_bytes() -> None:
    new_id()  # the parent has a buffer in use
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_id()[10:].encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    parent = new_id()[10:]
    os.close(read)
    os.close(write)
    assert child != parent


def test_encoding_is_crockford_base32_of_time_and_randomness() -> None:
    before = int(time.time() * 1000)
    made = new_id()
    after = int(time.time() * 1000)
    value = 0
    for char in made:
        value = value * 32 + "0123456789abcdefghjkmnpqrstvwxyz".index(char)
    assert value < 2**128
    assert before <= value >> 80 <= after
    assert made[0] in "01234567"
