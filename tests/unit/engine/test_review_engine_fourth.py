"""Review of the step engine, fourth pass: what a `transaction` that goes on after a failure
shows of that failure."""

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ._engine_core import build, connection, run

__all__ = ["connection"]  # the fixture, used by name

SECRET = "sk-live-5e1f0a7d9c"
PIN = "pin-7f3a9c21"


def _group(group_id: str, step_id: str, expression: str) -> dict[str, Any]:
    step = {"id": step_id, "type": "set", "value": {"expr": expression}}
    return {"id": group_id, "type": "transaction", "onError": "continue", "steps": [step]}


async def test_a_continued_transaction_masks_secrets_in_the_error_it_outputs(
    connection: AsyncConnection,
) -> None:
    """CEL's error quotes the value it could not use. A failed call's message masks the app's
    secrets and sensitive args; the same message kept as a `continue` group's output reached
    the answer in clear."""
    compiled = build(
        [
            _group("secret", "ttl", "duration(env.secrets.ttl)"),
            _group("arg", "pick", "{'a': 1}[args.pin]"),
        ],
        params=[{"name": "pin", "sensitive": True}],
    )
    env = {"config": {}, "secrets": {"ttl": SECRET}}
    result = await run(compiled, connection, args={"pin": PIN}, env=env)
    for group, step in (("secret", "ttl"), ("arg", "pick")):
        assert result.data[group]["committed"] is False
        error = result.data[group]["error"]
        assert (error["error"], error["stepId"]) == ("expression_error", step)
        assert "***" in error["message"]
    assert SECRET not in result.body.decode()
    assert PIN not in result.body.decode()
