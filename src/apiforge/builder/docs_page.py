"""The HTML page of an app's generated docs, rendered from its OpenAPI document.

Self-contained: inline CSS, no script, no font or CDN, so it works offline and under a strict
Content-Security-Policy. Every value from the definition is HTML-escaped: API descriptions are
the builder's data, shown as text, never as markup.
"""

import json
from html import escape
from typing import Any

CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'"

_STYLE = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2328}
header{background:#0d1117;color:#f0f6fc;padding:24px 32px}header h1{margin:0 0 4px}
main{display:flex}nav{width:240px;padding:16px;border-right:1px solid #d0d7de;font-size:14px}
nav ul{list-style:none;padding-left:8px}section.docs{flex:1;padding:16px 32px;max-width:980px}
article{border-bottom:1px solid #d0d7de;padding:16px 0}code,pre{font-family:ui-monospace,monospace}
pre{background:#f6f8fa;padding:12px;overflow:auto;border-radius:6px}
.text{white-space:pre-wrap}.badge{display:inline-block;border-radius:10px;padding:0 8px;
margin-right:6px;font-size:12px;background:#ddf4ff}.warn{background:#fff8c5}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #d0d7de;padding:4px 8px;
text-align:left;vertical-align:top}
"""


def _text(value: Any) -> str:
    return escape(str(value if value is not None else ""), quote=True)


def _constraints(schema: dict[str, Any]) -> str:
    parts = []
    for key in (
        "enum",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "pattern",
        "default",
    ):
        if key in schema:
            parts.append(f"{key}: {json.dumps(schema[key], ensure_ascii=False)}")
    if schema.get("writeOnly"):
        parts.append("sensitive")
    return "; ".join(parts)


def _params_table(args: dict[str, Any]) -> str:
    properties: dict[str, Any] = args.get("properties") or {}
    if not properties:
        return "<p>No parameters.</p>"
    required = set(args.get("required") or [])
    rows = "".join(
        "<tr>"
        f"<td><code>{_text(name)}</code></td><td>{_text(schema.get('type'))}</td>"
        f"<td>{'yes' if name in required else 'no'}</td>"
        f"<td>{_text(_constraints(schema))}</td>"
        f"<td class=text>{_text(schema.get('description'))}</td>"
        "</tr>"
        for name, schema in properties.items()
    )
    return (
        "<table><thead><tr><th>Name</th><th>Type</th><th>Required</th><th>Constraints</th>"
        f"<th>Description</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _api_name(path: str) -> str:
    """The API a path of the document calls (`/api/v1/invocations#getPost`): its operation id
    may carry a suffix that tells apart names differing only by case (`openapi.operation_ids`)."""
    return path.split("#", 1)[1]


def _article(path: str, operation: dict[str, Any]) -> str:
    api = _api_name(path)
    content = operation["requestBody"]["content"]["application/json"]
    args = content["schema"]["properties"]["args"]
    permission = operation.get("x-permission") or {}
    badges = [f"<span class=badge>price {_text(operation.get('x-price'))} RU</span>"]
    if "x-cost" in operation:  # the owner's docs only (openapi.DocsService)
        badges.append(f"<span class=badge>cost {_text(operation['x-cost'])} RU</span>")
    if permission.get("requireToken"):
        badges.append(f"<span class=badge>token required ({_text(permission.get('mode'))})</span>")
    if permission.get("requireIdempotencyKey"):
        badges.append("<span class=badge>Idempotency-Key required</span>")
    if not operation.get("x-enabled", True):
        badges.append("<span class='badge warn'>disabled</span>")
    if operation.get("deprecated"):
        badges.append("<span class='badge warn'>deprecated</span>")
    example = ""
    if "example" in content:
        text = json.dumps(content["example"], indent=2, ensure_ascii=False)
        example = f"<h4>Request</h4><pre>{_text(text)}</pre>"
    return (
        f"<article id='api-{_text(api)}'><h3>{_text(operation.get('summary'))} "
        f"<code>{_text(api)}</code></h3><p>{''.join(badges)}</p>"
        f"<p><code>POST {_text(path.split('#', 1)[0])}</code></p>"
        f"<div class=text>{_text(operation.get('description'))}</div>"
        f"<h4>Parameters</h4>{_params_table(args)}{example}</article>"
    )


def render_html(document: dict[str, Any]) -> str:
    """A complete HTML page for an OpenAPI document built by `openapi.build_openapi`."""
    info = document.get("info") or {}
    operations = [(path, item["post"]) for path, item in (document.get("paths") or {}).items()]
    by_group: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for path, operation in operations:
        group = (operation.get("tags") or ["Other"])[0]
        by_group.setdefault(group, []).append((path, operation))
    ordered = sorted(by_group.items(), key=lambda item: (item[0] == "Other", item[0]))
    nav = "".join(
        f"<li><strong>{_text(group)}</strong><ul>"
        + "".join(
            f"<li><a href='#api-{_text(_api_name(path))}'>{_text(_api_name(path))}</a></li>"
            for path, _ in items
        )
        + "</ul></li>"
        for group, items in ordered
    )
    body = "".join(
        f"<h2>{_text(group)}</h2>" + "".join(_article(path, op) for path, op in items)
        for group, items in ordered
    )
    deprecated = " <span class='badge warn'>deprecated</span>" if info.get("x-deprecated") else ""
    if info.get("x-sunset"):
        deprecated += f" <span class='badge warn'>sunset {_text(info['x-sunset'])}</span>"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{_text(info.get('title'))} {_text(info.get('version'))} API docs</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<header><h1>{_text(info.get('title'))}</h1>"
        f"<div>version <code>{_text(info.get('version'))}</code>{deprecated}</div>"
        f"<p class=text>{_text(info.get('description'))}</p></header>"
        f"<main><nav><ul>{nav or '<li>No APIs yet.</li>'}</ul></nav>"
        f"<section class=docs>{body or '<p>This app has no APIs yet.</p>'}</section></main>"
        "</body></html>"
    )
