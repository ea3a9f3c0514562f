"""Review of the step engine over HTTP, fourth pass: a call's arg names reach the params as
sent."""

from typing import Any

import pytest
from httpx import AsyncClient

from tests.e2e._workspaces import assert_error, data_of
from tests.e2e.test_review_args_values import _app, _call, _call_raw


def _echo() -> list[dict[str, Any]]:
    return [{"id": "echo", "type": "set", "value": {"expr": "args"}}]


@pytest.mark.parametrize("name", [" title", "title ", "title\t"])
async def test_an_arg_name_with_spaces_is_an_unknown_param(client: AsyncClient, name: str) -> None:
    """The input model trimmed the keys of `args` too: `"title "`, which no param declares, ran
    as `title` instead of being refused as any other unknown name is."""
    user, app_id = await _app(client, [{"name": "title"}], _echo())
    refused = await _call(client, user, app_id, {name: "x"})
    data = assert_error(refused, 400, "invalid_arguments")
    assert data["errors"] == [{"field": name, "message": "unknown parameter"}]
    assert data_of(await _call(client, user, app_id, {"title": "x"})) == {"echo": {"title": "x"}}


async def test_two_arg_names_that_differ_by_spaces_are_not_merged(client: AsyncClient) -> None:
    """`{" title": "a", "title": "b"}` reached the steps as one arg, the last one written."""
    user, app_id = await _app(client, [{"name": "title"}], _echo())
    refused = await _call_raw(client, user, app_id, b'{"title": "a", " title": "b"}')
    data = assert_error(refused, 400, "invalid_arguments")
    assert data["errors"] == [{"field": " title", "message": "unknown parameter"}]
