"""Review of the step engine, fifth pass: names a `forEach` binds, non-finite numbers in an
`httpRequest` body, secrets used as map keys in traces, and the versions a `callApi` may pin."""

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.engine.base import StepFailedError
from apiforge.engine.compiler import compile_api
from apiforge.engine.errors import DefinitionError
from apiforge.engine.runtime import MASK, Masker
from apiforge.engine.schemas import InvocationCreate

from ._engine_core import connection, run
from ._local_http import LocalServer
from ._steps_support import compile_step, make_context, make_services

__all__ = ["connection"]  # the fixture, used by name

# --- forEach names ----------------------------------------------------------------------------


def _loop(**names: str) -> dict[str, Any]:
    return {
        "id": "loop",
        "type": "forEach",
        "items": [1, 2],
        "maxIterations": 2,
        "collect": {"expr": names.get("as", "item")},
        **names,
    }


@pytest.mark.parametrize(
    "name",
    [
        # CEL keywords and reserved words: `null` is the literal, `in` a syntax error...
        *("null", "true", "false", "in", "as", "if", "for", "let", "return", "namespace"),
        # ... and the engine's own names, which the item would shadow (`type(x) == int`).
        *("int", "string", "double", "bool", "type", "dyn", "has", "size", "timestamp", "map"),
    ],
)
@pytest.mark.parametrize("field", ["as", "indexAs"])
def test_foreach_refuses_cel_keywords_and_builtins_as_variable_names(field: str, name: str) -> None:
    """`"as": "null"` was saved, and every read of the item read the literal `null` instead."""
    with pytest.raises(DefinitionError) as caught:
        compile_api({"api": "x", "steps": [_loop(**{field: name})]}, {}, {}, saving=True)
    assert caught.value.status == 400
    assert caught.value.reason == "invalid_definition"
    (error,) = caught.value.details["errors"]
    assert error["field"] == f"steps.loop.{field}"
    assert repr(name) in error["message"]


def test_foreach_still_takes_ordinary_names() -> None:
    loop = _loop(**{"as": "integer", "indexAs": "position"})
    compiled = compile_api({"api": "x", "steps": [loop]}, {}, {}, saving=True)
    assert compiled.steps[0].as_ == "integer"  # type: ignore[attr-defined]


async def test_a_stored_definition_binding_a_builtin_name_keeps_running(
    connection: AsyncConnection,
) -> None:
    """The check is one for what is saved: a version published before it (`"as": "string"`
    read its item) is immutable and must go on answering as it did."""
    stored = {"api": "x", "steps": [_loop(**{"as": "string"})]}
    result = await run(compile_api(stored, {}, {}), connection)
    assert result.data == {"loop": [1, 2]}


# --- httpRequest body ------------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    local = LocalServer()
    await local.start()
    yield local
    await local.stop()


@pytest.mark.parametrize(
    "expression", ["1.0 / 0.0", "-1.0 / 0.0", "double('NaN')", "[1, {'x': double('inf')}]"]
)
async def test_a_body_with_a_non_finite_number_is_refused_before_sending(
    server: LocalServer, expression: str
) -> None:
    """`json.dumps` wrote `Infinity` and `NaN`, which are not JSON: the upstream got a body no
    JSON reader takes. Refused, now by the expression that yields it (no JSON holds it)."""
    step = compile_step(
        {
            "id": "call",
            "type": "httpRequest",
            "method": "POST",
            "url": f"{server.base}/echo",
            "body": {"n": {"expr": expression}},
        }
    )
    ctx = make_context(services=make_services(allow_hosts=frozenset({"127.0.0.1"})))
    with pytest.raises(StepFailedError) as caught:
        await step.run(ctx)
    assert caught.value.status == 400
    assert caught.value.reason == "expression_error"
    assert caught.value.details == {"stepId": "call", "field": "body.n"}
    assert "finite" in caught.value.message
    assert server.seen == []


async def test_a_header_value_with_a_non_finite_number_is_refused(server: LocalServer) -> None:
    """A non-string header value is sent as JSON, so the same rule holds."""
    step = compile_step(
        {
            "id": "call",
            "type": "httpRequest",
            "url": f"{server.base}/echo",
            "headers": {"X-Ratio": {"expr": "{'r': 1.0 / 0.0}"}},
        }
    )
    ctx = make_context(services=make_services(allow_hosts=frozenset({"127.0.0.1"})))
    with pytest.raises(StepFailedError) as caught:
        await step.run(ctx)
    assert caught.value.details == {"stepId": "call", "field": "headers.X-Ratio"}
    assert server.seen == []


# --- trace masking ---------------------------------------------------------------------------


def test_a_secret_used_as_a_map_key_is_masked() -> None:
    """Values were masked, keys never: `{env.secrets.key: 1}` showed the secret in the trace."""
    mask = Masker(frozenset({"ssn"}), ["sk-live-abcdef", "77"])
    shown = mask({"sk-live-abcdef": 1, "for sk-live-abcdef": {"ssn": "1"}, "77": 2, "ok": 3})
    assert shown == {MASK: 1, f"for {MASK}": {"ssn": MASK}, MASK + " (2)": 2, "ok": 3}
    assert "sk-live-abcdef" not in json.dumps(shown)


def test_masked_keys_that_collide_keep_every_entry() -> None:
    mask = Masker(frozenset(), ["secret-one", "secret-two"])
    shown = mask({"secret-one": 1, "secret-two": 2, MASK: 3})
    assert sorted(shown.values()) == [1, 2, 3]
    assert "secret" not in json.dumps(shown)


# --- versions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1000000.0.0", "1.999999999.0", "0.0.123456789"])
def test_a_call_api_pin_and_an_invocation_reach_every_version_a_publish_makes(
    version: str,
) -> None:
    """A publish numbers parts up to 999,999,999; a pin or an invocation took 6 digits only."""
    step = compile_step({"id": "c", "type": "callApi", "api": "echo", "version": version})
    assert step.version == version  # type: ignore[attr-defined]
    assert InvocationCreate.model_validate({"appId": "a", "api": "x", "version": version})


@pytest.mark.parametrize("version", ["1000000000.0.0", "1.0.0123"])
def test_versions_no_publish_makes_stay_refused(version: str) -> None:
    with pytest.raises(DefinitionError):
        compile_step({"id": "c", "type": "callApi", "api": "echo", "version": version})
    with pytest.raises(ValueError, match="version"):
        InvocationCreate.model_validate({"appId": "a", "api": "x", "version": version})
