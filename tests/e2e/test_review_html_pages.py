"""Review of every HTML page apiforge serves, as a hostile builder: an app's docs page is read by
other workspaces (a public app), so any builder text that became markup would be stored XSS
across tenants. The page's structure is checked, not a list of payloads: only the tags and
attributes the renderer writes may appear, whatever the builder typed."""

from html import unescape
from html.parser import HTMLParser

from httpx import AsyncClient

from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import subscribe
from tests.e2e._workspaces import data_of
from tests.factories import register

# Breaks out of text, attributes (both quotes), <style>, <title>, comments and URLs.
EVIL = (
    "</title></style></code></pre><script>alert(1)</script><img src=x onerror=alert(2)>"
    '\'"><svg onload=alert(3)><!-- ]]> <a href="javascript:alert(4)">x</a> &lt;'
)
_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "h4", "div",
    "p", "main", "nav", "ul", "li", "strong", "a", "section", "article", "span", "code", "pre",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
_ATTRIBUTES = {"lang", "charset", "name", "content", "class", "id", "href"}


class _Structure(HTMLParser):
    """Every tag, attribute and comment of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: list[tuple[str, str | None]] = []
        self.comments: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.extend(attrs)

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)


async def test_no_builder_text_becomes_markup_on_a_public_apps_docs_page(
    client: AsyncClient,
) -> None:
    owner, reader = await register(client), await register(client)
    h = owner.headers
    app_id = await new_app(client, h, EVIL[:100], description=EVIL, visibility="public")
    params = [
        {
            "name": "p",
            "type": "string",
            "description": EVIL,
            "enum": [EVIL, "b"],
            "default": EVIL,
        },
        {"name": "q", "type": "string", "pattern": "^</style><script>$", "min": 1},
    ]
    await new_api(
        client,
        h,
        app_id,
        "evil",
        name=EVIL[:100],
        description=EVIL,
        docExtra=EVIL,
        group=EVIL[:64],
        params=params,
    )
    data_of(await client.post(f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=h))
    await subscribe(client, reader.headers, app_id)
    response = await client.get(f"/api/v1/apps/{app_id}/docs", headers=reader.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    structure = _Structure()
    structure.feed(response.text)
    structure.close()
    assert structure.tags <= _TAGS, structure.tags - _TAGS
    assert {name for name, _ in structure.attributes} <= _ATTRIBUTES
    hrefs = [value or "" for name, value in structure.attributes if name == "href"]
    assert hrefs
    assert all(href.startswith("#api-") for href in hrefs), hrefs
    assert structure.comments == []
    assert EVIL in unescape(response.text)  # shown whole, as text
