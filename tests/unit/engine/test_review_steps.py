"""Review: the engine's auth steps with values no JSON holds (an expression yielding NaN or an
infinity is itself an error now: `tools/expressions._Plain`)."""

from typing import Any

import pytest

from apiforge.engine.base import StepFailedError

from ._steps_support import compile_step, make_context


@pytest.mark.parametrize("source", ["1.0/0.0", "-1.0/0.0", "double('nan')"])
async def test_jwt_sign_refuses_claims_that_are_not_json_numbers(source: str) -> None:
    step = compile_step(
        {"id": "sign", "type": "jwtSign", "sub": "u-1", "claims": {"score": {"expr": source}}}
    )
    with pytest.raises(StepFailedError) as caught:
        await step.run(make_context())
    assert (caught.value.status, caught.value.reason) == (400, "expression_error")
    details: dict[str, Any] = caught.value.details
    assert (details["stepId"], details["field"]) == ("sign", "claims.score")
    assert "finite" in caught.value.message
