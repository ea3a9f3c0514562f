"""Generated docs (`/apps/{appId}/openapi.json`, `/apps/{appId}/docs`) and import/export.

These answer files, not envelopes (DESIGN.md §2: downloads are outside it): the OpenAPI document
as tools expect it, an HTML page, an export document. Errors still come in the envelope.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from apiforge.builder.docs_page import CONTENT_SECURITY_POLICY, render_html
from apiforge.builder.openapi import DocsService
from apiforge.builder.transfer import (
    ExportFormat,
    TransferService,
    download_name,
    dump_document,
)
from apiforge.http.deps import SessionDep, SettingsDep
from apiforge.http.envelope import Envelope, ok
from apiforge.http.schemas import Created
from apiforge.tools.disposition import content_disposition
from apiforge.workspaces.deps import CurrentWorkspaceDep

router = APIRouter()  # tagged `builder` by the router that includes it (builder/router.py)
# Documents read by the route itself, in the encoding a byte order mark names (UTF-16 from
# Windows shells too): not refused as JSON that is not UTF-8 (`http/middleware.Utf8JsonMiddleware`).
DOCUMENT_PATHS = ("/api/v1/apps/import",)

VersionLabel = Annotated[str, Query(max_length=32, description="dev, latest or X.Y.Z")]


def _docs(session: SessionDep) -> DocsService:
    return DocsService(session)


def _transfer(session: SessionDep, settings: SettingsDep) -> TransferService:
    return TransferService(session, settings)


DocsServiceDep = Annotated[DocsService, Depends(_docs)]
TransferServiceDep = Annotated[TransferService, Depends(_transfer)]


@router.post(
    "/apps/import",
    summary="Import an exported app as a new app (editor+)",
    description="Body: the export document, as JSON or (with a YAML content type) YAML.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                media: {"schema": {"type": "object", "description": "An app export document"}}
                for media in ("application/json", "application/yaml")
            },
        }
    },
)
async def import_app(
    request: Request, current: CurrentWorkspaceDep, service: TransferServiceDep
) -> Envelope[Created]:
    body = await request.body()
    return ok(await service.import_raw(current, body, request.headers.get("content-type", "")))


@router.get(
    "/apps/{app_id}/export",
    summary="Download the app as a JSON or YAML document",
    response_class=Response,
)
async def export_app(
    app_id: str,
    current: CurrentWorkspaceDep,
    service: TransferServiceDep,
    format: ExportFormat = "json",
) -> Response:
    document = await service.export(current, app_id)
    content, media_type, filename = dump_document(document, format)
    disposition = content_disposition(download_name(document, format), fallback=filename)
    return Response(content, media_type=media_type, headers={"Content-Disposition": disposition})


@router.get(
    "/apps/{app_id}/openapi.json",
    summary="OpenAPI 3.1 document of the app's APIs (default: latest, or dev before a publish)",
    description="Any workspace reads a public app's published versions (not `dev`, no `x-cost`).",
    response_class=JSONResponse,
)
async def app_openapi(
    app_id: str,
    current: CurrentWorkspaceDep,
    service: DocsServiceDep,
    version: VersionLabel | None = None,
) -> JSONResponse:
    document: dict[str, Any] = await service.openapi(current, app_id, version)
    return JSONResponse(document)


@router.get(
    "/apps/{app_id}/docs",
    summary="The app's docs as a self-contained HTML page (works offline)",
    response_class=HTMLResponse,
)
async def app_docs(
    app_id: str,
    current: CurrentWorkspaceDep,
    service: DocsServiceDep,
    version: VersionLabel | None = None,
) -> HTMLResponse:
    document = await service.openapi(current, app_id, version)
    return HTMLResponse(
        render_html(document),
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
        },
    )
