"""Review: `password` verify reads argon2's cost from the hash it is given, so a crafted hash
must not choose it. `m=4000000` took 4 GB and 6 s on one worker thread; `t=` a million would
hold the thread for hours, and a handful of such calls stop every other argon2 user (sign-ins)
waiting for the thread pool."""

import time

import pytest
from argon2 import PasswordHasher

from apiforge.accounts import passwords
from apiforge.engine.base import StepFailedError

from ._steps_support import compile_step, make_context

FAST = 2.0


def _verify_step() -> object:
    return compile_step(
        {
            "id": "check",
            "type": "password",
            "action": "verify",
            "password": {"expr": "args.password"},
            "hash": {"expr": "args.hash"},
        }
    )


def _with_cost(real_hash: str, **cost: int) -> str:
    """`real_hash` (`$argon2id$v=19$m=..,t=..,p=..$salt$digest`) with some of m, t, p changed."""
    parts = real_hash.split("$")
    current = dict(item.split("=") for item in parts[3].split(","))
    current.update({key: str(value) for key, value in cost.items()})
    parts[3] = ",".join(f"{key}={current[key]}" for key in ("m", "t", "p"))
    return "$".join(parts)


@pytest.mark.parametrize(
    "cost", [{"t": 1_000_000}, {"m": 4_000_000}, {"p": 10_000}], ids=["time", "memory", "lanes"]
)
async def test_a_hash_asking_for_a_huge_cost_is_refused_without_running_it(
    cost: dict[str, int],
) -> None:
    crafted = _with_cost(passwords.hash_password("secret"), **cost)
    step = _verify_step()
    ctx = make_context(args={"password": "secret", "hash": crafted})
    started = time.perf_counter()
    with pytest.raises(StepFailedError) as caught:
        await step.run(ctx)  # type: ignore[attr-defined]
    assert time.perf_counter() - started < FAST
    assert caught.value.details == {"stepId": "check", "field": "hash"}
    assert caught.value.status == 400


async def test_hashes_at_the_servers_cost_or_the_defaults_still_verify() -> None:
    step = _verify_step()
    own = passwords.hash_password("secret")
    ctx = make_context(args={"password": "secret", "hash": own})
    assert await step.run(ctx) is True  # type: ignore[attr-defined]
    cheap = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1).hash("secret")
    ctx = make_context(args={"password": "secret", "hash": cheap})
    assert await step.run(ctx) is True  # type: ignore[attr-defined]
    ctx = make_context(args={"password": "wrong", "hash": cheap})
    assert await step.run(ctx) is False  # type: ignore[attr-defined]
    ctx = make_context(args={"password": "secret", "hash": "not-an-argon2-hash"})
    assert await step.run(ctx) is False  # type: ignore[attr-defined]


def test_defaults_are_always_within_the_allowed_cost() -> None:
    assert passwords.cost_allowed(PasswordHasher().hash("x"))
    assert not passwords.cost_allowed(_with_cost(PasswordHasher().hash("x"), t=4))
