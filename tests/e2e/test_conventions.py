"""DESIGN.md §2 on real routes: envelope everywhere, reasons, camelCase, 1/0, ISO times, paging."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

import pytest
from fastapi import APIRouter, FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic import Field

from apiforge.app import create_app, shutdown
from apiforge.core.errors import ConflictError
from apiforge.core.settings import Settings
from apiforge.http.envelope import Envelope, ok
from apiforge.http.pagination import PageDep
from apiforge.http.schemas import ApiModel, Flag, InputModel, Timestamp


class Thing(ApiModel):
    thing_id: int
    is_ready: Flag
    made_at: Timestamp
    tag_list: list[str]


class ThingCreate(InputModel):
    name: Annotated[str, Field(max_length=10)]
    is_ready: Flag = False
    count: int = 0


def _router() -> APIRouter:
    router = APIRouter(prefix="/t")

    @router.get("/thing")
    async def thing() -> Envelope[Thing]:
        made = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
        return ok(Thing(thing_id=1, is_ready=True, made_at=made, tag_list=[]))

    @router.post("/thing")
    async def create(body: ThingCreate) -> Envelope[dict[str, object]]:
        return ok({"name": body.name, "isReady": int(body.is_ready), "count": body.count})

    @router.put("/thing")
    async def replace() -> Envelope[dict[str, str]]:
        return ok({"method": "PUT"})

    @router.delete("/thing")
    async def remove() -> Envelope[dict[str, str]]:
        return ok({"method": "DELETE"})

    @router.get("/boom")
    async def boom() -> Envelope[None]:
        raise RuntimeError("secret internal detail /etc/passwd")

    @router.get("/conflict")
    async def conflict() -> Envelope[None]:
        raise ConflictError("Already there", reason="already_there")

    @router.get("/page")
    async def page(params: PageDep) -> Envelope[dict[str, object]]:
        return ok({"pageNo": params.page_no, "pageSize": params.page_size})

    return router


@pytest.fixture
async def tapp(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    app.include_router(_router())
    yield app
    await shutdown(app)


@pytest.fixture
async def tclient(tapp: FastAPI) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app=tapp, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def test_success_envelope_camel_case_flags_times_and_empty_arrays(
    tclient: AsyncClient,
) -> None:
    response = await tclient.get("/t/thing")
    assert response.status_code == 200
    assert response.json() == {
        "code": 200,
        "message": "success",
        "data": {"thingId": 1, "isReady": 1, "madeAt": "2026-01-02T03:04:05Z", "tagList": []},
    }


@pytest.mark.parametrize("flag", [True, False, 1, 0, "true", "false", "1", "0"])
async def test_booleans_accept_both_forms(tclient: AsyncClient, flag: object) -> None:
    response = await tclient.post("/t/thing", json={"name": "a", "isReady": flag})
    assert response.status_code == 200
    assert response.json()["data"]["isReady"] == (1 if flag in (True, 1, "true", "1") else 0)


@pytest.mark.parametrize("flag", [2, "yes", 1.5, None, [], "TRUE!"])
async def test_booleans_refuse_other_values(tclient: AsyncClient, flag: object) -> None:
    response = await tclient.post("/t/thing", json={"name": "a", "isReady": flag})
    assert response.status_code == 400
    assert response.json()["data"]["errors"][0]["field"] == "isReady"


async def test_unknown_route_is_404_envelope(tclient: AsyncClient) -> None:
    response = await tclient.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == {
        "code": 404,
        "message": "Not found",
        "data": {"error": "not_found"},
    }


async def test_wrong_method_is_405_envelope(tclient: AsyncClient) -> None:
    response = await tclient.patch("/t/thing")
    assert response.status_code == 405
    body = response.json()
    assert body["code"] == 405
    assert body["data"]["error"] == "method_not_allowed"


async def test_unhandled_error_is_opaque_500_with_request_id(tclient: AsyncClient) -> None:
    response = await tclient.get("/t/boom", headers={"X-Request-ID": "trace-abc-12345"})
    assert response.status_code == 500
    assert response.json() == {
        "code": 500,
        "message": "Internal server error",
        "data": {"error": "internal_error"},
    }
    assert "passwd" not in response.text
    assert "Traceback" not in response.text
    assert response.headers["X-Request-ID"] == "trace-abc-12345"


async def test_domain_error_keeps_status_and_reason(tclient: AsyncClient) -> None:
    response = await tclient.get("/t/conflict")
    assert response.status_code == 409
    assert response.json() == {
        "code": 409,
        "message": "Already there",
        "data": {"error": "already_there"},
    }


async def test_malformed_json_is_400(tclient: AsyncClient) -> None:
    response = await tclient.post(
        "/t/thing", content=b'{"name": "a",', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["data"]["error"] == "malformed_json"


async def test_missing_fields_are_named(tclient: AsyncClient) -> None:
    response = await tclient.post("/t/thing", json={})
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "Missing required parameters"
    assert body["data"]["errors"] == [{"field": "name", "message": "is required"}]


async def test_wrong_types_unknown_fields_and_oversized_values_are_field_errors(
    tclient: AsyncClient,
) -> None:
    response = await tclient.post(
        "/t/thing", json={"name": "x" * 11, "count": "many", "color": "red"}
    )
    assert response.status_code == 400
    fields = {e["field"] for e in response.json()["data"]["errors"]}
    assert fields == {"name", "count", "color"}
    assert response.json()["data"]["error"] == "invalid_input"


async def test_non_object_body_is_400(tclient: AsyncClient) -> None:
    response = await tclient.post("/t/thing", json=["name"])
    assert response.status_code == 400


async def test_method_override_on_post(tclient: AsyncClient) -> None:
    put = await tclient.post("/t/thing", headers={"X-HTTP-Method-Override": "PUT"})
    assert put.json()["data"] == {"method": "PUT"}
    delete = await tclient.post("/t/thing", headers={"X-HTTP-Method-Override": "delete"})
    assert delete.json()["data"] == {"method": "DELETE"}


async def test_method_override_cannot_turn_post_into_get(tclient: AsyncClient) -> None:
    """Nor is the POST run instead of the GET asked for: nothing runs (400)."""
    response = await tclient.post(
        "/t/thing", json={"name": "a"}, headers={"X-HTTP-Method-Override": "GET"}
    )
    assert response.status_code == 400
    assert response.json()["data"]["error"] == "invalid_method_override"


async def test_method_override_refused_on_get(tclient: AsyncClient) -> None:
    """Only a POST is overridden: a GET asking for DELETE is refused, not run as the GET."""
    response = await tclient.get("/t/thing", headers={"X-HTTP-Method-Override": "DELETE"})
    assert response.status_code == 400
    assert response.json()["data"]["error"] == "invalid_method_override"
    same = await tclient.get("/t/thing", headers={"X-HTTP-Method-Override": "get"})
    assert same.json()["data"]["thingId"] == 1


async def test_request_id_generated_when_absent_or_malformed(tclient: AsyncClient) -> None:
    first = await tclient.get("/t/thing")
    second = await tclient.get("/t/thing", headers={"X-Request-ID": "bad id\twith<script>"})
    assert len(first.headers["X-Request-ID"]) == 26
    assert second.headers["X-Request-ID"] != "bad id\twith<script>"
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


async def test_request_id_on_error_responses(tclient: AsyncClient) -> None:
    response = await tclient.get("/missing", headers={"X-Request-ID": "client-id-0001"})
    assert response.headers["X-Request-ID"] == "client-id-0001"


async def test_body_over_limit_is_413(tclient: AsyncClient, settings: Settings) -> None:
    big = b'{"name": "' + b"a" * (settings.max_body_bytes + 10) + b'"}'
    response = await tclient.post(
        "/t/thing", content=big, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["data"]["error"] == "payload_too_large"


async def test_streamed_body_over_limit_is_413(tclient: AsyncClient, settings: Settings) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"a" * 65536
        yield b'"}'

    response = await tclient.post(
        "/t/thing", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("pageSize=1000000000", "pageSize"),
        ("pageSize=0", "pageSize"),
        ("pageSize=-5", "pageSize"),
        ("pageSize=abc", "pageSize"),
        ("pageNo=0", "pageNo"),
        ("pageNo=99999999999999999999", "pageNo"),
        ("pageNo=1;DROP TABLE accounts", "pageNo"),
        ("order=sideways", "order"),
    ],
)
async def test_bad_paging_is_400_naming_the_field(
    tclient: AsyncClient, query: str, field: str
) -> None:
    response = await tclient.get(f"/t/page?{query}")
    assert response.status_code == 400
    assert response.json()["data"]["errors"][0]["field"] == field


async def test_paging_defaults_and_cap(tclient: AsyncClient, settings: Settings) -> None:
    default = await tclient.get("/t/page")
    assert default.json()["data"] == {"pageNo": 1, "pageSize": settings.page_size_default}
    at_cap = await tclient.get(f"/t/page?pageSize={settings.page_size_max}&pageNo=3")
    assert at_cap.json()["data"] == {"pageNo": 3, "pageSize": settings.page_size_max}


async def test_body_nested_beyond_the_decoder_is_malformed_json(tclient: AsyncClient) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    response = await tclient.post(
        "/t/thing", content=deep, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["data"]["error"] == "malformed_json"
