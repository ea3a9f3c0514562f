"""Export an app as one JSON or YAML document, and import such a document as a new app.

The document holds what a builder wrote — the app's name, description, visibility and config,
its collections' schemas, every `dev` API, and the published versions' notes — and nothing that
identifies or secures the source: no ids, no signing secret, no secret values (their names are
listed so the importer knows what to set), no records. An import therefore creates a new app with
new ids and a new signing secret, its APIs on `dev`; the notes travel as part of the document.
"""

import codecs
from typing import Any, Literal

import anyio.to_thread
import orjson
import yaml
from pydantic import ValidationError as PydanticError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.builder import env as app_env
from apiforge.builder.definitions import DefinitionChecker, api_document, definition_of
from apiforge.builder.models import ApiDefinition, App, AppVersion
from apiforge.builder.schemas import AppCreate, AppDocument
from apiforge.builder.service import apply_definition, create_app_row, find_app
from apiforge.core.errors import ValidationError
from apiforge.core.settings import Settings
from apiforge.datasets.models import Collection
from apiforge.datasets.schema import CollectionSchema, FieldSchema, validate_fields
from apiforge.datasets.schemas import FieldDef
from apiforge.datasets.sql import sync_indexes
from apiforge.http.handlers import field_errors
from apiforge.http.schemas import Created
from apiforge.tools.clock import iso, utcnow
from apiforge.workspaces.models import Role, Workspace
from apiforge.workspaces.service import CurrentWorkspace

ExportFormat = Literal["json", "yaml"]
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
# libyaml's loader when PyYAML has it (its wheels do): the pure-Python one takes seconds for a
# few KB of nested brackets, and about 10 times longer than libyaml for any large document.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_FIELD_FLAGS = ("required", "unique", "indexed", "encrypted")


def export_document(
    app: App,
    apis: list[ApiDefinition],
    collections: list[Collection],
    versions: list[AppVersion],
) -> dict[str, Any]:
    documents = []
    for row in sorted(apis, key=lambda r: r.api):
        document = api_document(row)
        del document["cost"]  # computed again on import, with the target's prices
        documents.append(document)
    return {
        "format": "apiforge-app",
        "formatVersion": 1,
        "exportedTime": iso(utcnow()),
        "app": {
            "name": app.name,
            "description": app.description,
            "visibility": app.visibility,
            "config": dict((app.env or {}).get("config") or {}),
            "secretNames": app_env.secret_names(app.env or {}),
        },
        "collections": [
            {
                "name": c.name,
                "description": c.description,
                "fields": [_exported_field(f) for f in c.fields or []],
            }
            for c in sorted(collections, key=lambda c: c.name)
        ],
        "apis": documents,
        "versions": [
            {
                "version": v.version,
                "notes": v.notes,
                "deprecated": v.deprecated,
                "sunset": None if v.sunset_at is None else iso(v.sunset_at),
                "createdTime": iso(v.created_at),
            }
            for v in sorted(versions, key=lambda v: (v.major, v.minor, v.patch))
        ],
    }


def _exported_field(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored field with JSON booleans for its flags, as an import stores them: the datasets
    routes store 1/0, so an app's export changed after a round trip through import."""
    return {
        "name": stored.get("name"),
        "type": stored.get("type"),
        **{flag: bool(stored.get(flag)) for flag in _FIELD_FLAGS},
        "default": stored.get("default"),
    }


class _YamlDumper(yaml.SafeDumper):
    """PyYAML writes U+0085 (NEL) as it is in plain and single-quoted scalars, where its own
    loader reads it as a line break (a config value "a<NEL>b" came back as "a  b"): text
    holding one is written double-quoted, where it is escaped."""


def _yaml_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if "\x85" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_YamlDumper.add_representer(str, _yaml_str)


def dump_document(document: dict[str, Any], fmt: ExportFormat) -> tuple[bytes, str, str]:
    """(content, media type, ASCII file name) of an export document: the name for clients that
    do not read `download_name`'s exact one from `filename*`."""
    slug = "".join(c if c.isascii() and c.isalnum() else "-" for c in document["app"]["name"])
    slug = slug.strip("-")[:40] or "app"
    if fmt == "yaml":
        text = yaml.dump(document, Dumper=_YamlDumper, sort_keys=False, allow_unicode=True)
        return text.encode(), "application/yaml", f"{slug}.yaml"
    content = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    return content, "application/json", f"{slug}.json"


def download_name(document: dict[str, Any], fmt: ExportFormat) -> str:
    """The export's file name as the app is named (`博客.json`), without the characters a file
    name cannot hold (controls, `/`, `\\`)."""
    name = "".join(" " if c in "/\\" or not c.isprintable() else c for c in document["app"]["name"])
    return f"{name.strip()[:100].strip() or 'app'}.{fmt}"


def malformed(message: str) -> ValidationError:
    return ValidationError(
        message,
        reason="malformed_document",
        errors=[{"field": "body", "message": message}],
    )


# Byte order marks a saved file may start with (Windows editors write one before UTF-8, and
# Windows PowerShell's `>` writes UTF-16): read in the encoding they name. Only this document;
# other JSON bodies must be UTF-8 (`http/middleware.Utf8JsonMiddleware`).
# UTF-32 first: its little-endian mark starts with UTF-16's.
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# PyYAML's safe constructors let Python's own errors through for plain scalars they cannot
# build (`2024-02-30` is a date with no such day, `!!int x`, an integer of 5,000 digits):
# those are documents that are not valid YAML, not server errors.
_YAML_ERRORS = (
    yaml.YAMLError,
    ValueError,
    LookupError,
    AttributeError,
    TypeError,
    OverflowError,
    RecursionError,
)


def _text(raw: bytes) -> str:
    """The document as text: UTF-8, or the encoding a byte order mark names (mark dropped)."""
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            return raw[len(bom) :].decode(encoding)
    return raw.decode("utf-8")


def parse_document(raw: bytes, content_type: str) -> Any:
    """The parsed document: YAML for a YAML content type, JSON otherwise.

    YAML anchors and aliases are refused: expanded, a few lines of them become gigabytes."""
    media = content_type.split(";", 1)[0].strip().lower()
    kind = "YAML" if media in YAML_TYPES else "JSON"
    try:
        text = _text(raw)
    except UnicodeDecodeError:
        raise malformed(f"The document is not valid {kind}: not UTF-8 text") from None
    if not text.strip():
        raise malformed("The document is empty")
    if kind == "YAML":
        try:
            for event in yaml.parse(text, Loader=_YAML_LOADER):
                if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                    raise malformed("YAML anchors and aliases are not accepted")
            return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
        except _YAML_ERRORS:
            raise malformed("The document is not valid YAML") from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise malformed("The document is not valid JSON") from None


def validate_document(data: Any) -> AppDocument:
    """The document as a model; 400 naming every problem's path."""
    try:
        return AppDocument.model_validate(data)
    except PydanticError as exc:
        reason, message, errors = field_errors([dict(e) for e in exc.errors()])
        raise ValidationError(message, errors=errors, reason=reason) from None
    except RecursionError:
        raise malformed("The document nests too deeply") from None


async def export_app(session: AsyncSession, app: App) -> dict[str, Any]:
    apis = await session.scalars(select(ApiDefinition).where(ApiDefinition.app_id == app.id))
    collections = await session.scalars(select(Collection).where(Collection.app_id == app.id))
    versions = await session.scalars(select(AppVersion).where(AppVersion.app_id == app.id))
    return export_document(app, list(apis), list(collections), list(versions))


async def import_app(
    session: AsyncSession, settings: Settings, workspace: Workspace, document: AppDocument
) -> App:
    """Create the document's app in `workspace`: collections first, then every API compiled
    against them and today's prices (any refusal names `collections.<i>...` or `apis.<i>...`)."""
    _ensure_unique([c.name for c in document.collections], "collections", "name")
    _ensure_unique([a.api for a in document.apis], "apis", "api")
    for index, collection in enumerate(document.collections):
        fields = [FieldSchema(**_field(f)) for f in collection.fields]
        problems = validate_fields(fields)
        if problems:
            raise ValidationError(
                errors=[{**p, "field": f"collections.{index}.{p['field']}"} for p in problems]
            )
    info = document.app
    app = await create_app_row(
        session,
        settings,
        workspace,
        AppCreate(
            name=info.name,
            description=info.description,
            visibility=info.visibility,
            config=info.config,
        ),
    )
    schemas: dict[str, CollectionSchema] = {}
    for collection in document.collections:
        stored = [_field(f) for f in collection.fields]
        row = Collection(
            app_id=app.id, name=collection.name, description=collection.description, fields=stored
        )
        session.add(row)
        await session.flush()
        schema = CollectionSchema.build(id=row.id, app_id=app.id, name=row.name, fields=stored)
        await sync_indexes(await session.connection(), schema)
        schemas[row.name] = schema
    checker = DefinitionChecker(session)
    prices = await checker.prices()
    definitions = {api.api: definition_of(api) for api in document.apis}
    callees = await checker.callee_costs(None, definitions, schemas, prices)
    for index, api in enumerate(document.apis):
        cost = checker.check(
            definitions[api.api],
            schemas,
            prices,
            prefix=f"apis.{index}.",
            callee_cost=callees.at(0),
        )
        row_api = ApiDefinition(app_id=app.id)
        apply_definition(row_api, api, cost)
        session.add(row_api)
    await session.flush()
    return app


def _field(definition: FieldDef) -> dict[str, Any]:
    """A field as `collections.fields` stores it (JSON booleans, not the 1/0 of responses)."""
    return {
        "name": definition.name,
        "type": definition.type,
        "required": definition.required,
        "unique": definition.unique,
        "indexed": definition.indexed,
        "encrypted": definition.encrypted,
        "default": definition.default,
    }


def _ensure_unique(names: list[str], where: str, attr: str) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            raise ValidationError(
                f"Duplicate {attr} {name!r} in {where}",
                errors=[{"field": f"{where}.{index}.{attr}", "message": "is a duplicate"}],
            )
        seen.add(name)


def _read_document(raw: bytes, content_type: str) -> AppDocument:
    return validate_document(parse_document(raw, content_type))


class TransferService:
    """Export and import for the current workspace. Never commits."""

    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings

    async def export(self, current: CurrentWorkspace, app_id: str) -> dict[str, Any]:
        """Any member may export: the document holds nothing a viewer cannot already read."""
        app = await find_app(self.session, current.id, app_id)
        return await export_app(self.session, app)

    async def import_raw(self, current: CurrentWorkspace, raw: bytes, content_type: str) -> Created:
        """Editor+: parse, validate and import a document into the current workspace."""
        current.require(Role.EDITOR)
        # Parsing a large document takes CPU time: off the event loop, so other requests go on.
        document = await anyio.to_thread.run_sync(_read_document, raw, content_type)
        app = await import_app(self.session, self.settings, current.workspace, document)
        return Created(id=app.id)
