"""Chinese and emoji text through a real call, on every backend: an expression's `size()` of a
string counts characters (code points), as a string param's `max` does and as CEL specifies.
It counted UTF-8 bytes, so a two-character Chinese name had size 6 while `max: 2` accepted it.
The expression-level cases are tests/unit/tools/test_review_unicode_sizes.py."""

from httpx import AsyncClient

from tests.e2e._apps import new_api, new_app, set_step
from tests.e2e._workspaces import data_of
from tests.factories import register


async def test_size_of_a_chinese_or_emoji_arg_counts_characters_like_max(
    client: AsyncClient,
) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers, "博客")
    steps = [
        set_step("length", {"expr": "size(args.name)"}),
        set_step("last", {"expr": "args.name.charAt(args.name.size() - 1)"}),
    ]
    params = [{"name": "name", "type": "string", "max": 3}]
    await new_api(client, user.headers, app_id, "greet", params=params, steps=steps)
    for name, length in (("张三", 2), ("张三😀", 3), ("e\u0301", 2)):
        body = {"appId": app_id, "api": "greet", "version": "dev", "args": {"name": name}}
        response = await client.post("/api/v1/invocations", json=body, headers=user.headers)
        assert data_of(response) == {"length": length, "last": name[-1]}
    body = {"appId": app_id, "api": "greet", "version": "dev", "args": {"name": "张三李四"}}
    response = await client.post("/api/v1/invocations", json=body, headers=user.headers)
    assert response.status_code == 400, response.text
