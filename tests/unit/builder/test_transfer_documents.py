"""Parsing and validating import documents: JSON or YAML, safe against hostile input."""

from typing import Any

import pytest
import yaml

from apiforge.builder.transfer import (
    download_name,
    dump_document,
    parse_document,
    validate_document,
)
from apiforge.core.errors import ValidationError

DOCUMENT: dict[str, Any] = {
    "format": "apiforge-app",
    "formatVersion": 1,
    "app": {"name": "Blog"},
    "collections": [{"name": "posts", "fields": [{"name": "title", "type": "string"}]}],
    "apis": [{"api": "listPosts", "steps": []}],
    "versions": [{"version": "1.0.0", "notes": "first"}],
}


def test_json_and_yaml_dumps_parse_back_to_the_same_document() -> None:
    for fmt, content_type in [("json", "application/json"), ("yaml", "application/yaml")]:
        content, media_type, filename = dump_document(DOCUMENT, fmt)  # type: ignore[arg-type]
        assert media_type == content_type
        assert filename == f"Blog.{fmt}"
        assert parse_document(content, f"{content_type}; charset=utf-8") == DOCUMENT


def test_yaml_aliases_are_refused() -> None:
    bomb = b'a: &a ["x","x"]\nb: &b [*a,*a]\nc: [*b,*b]\n'
    with pytest.raises(ValidationError) as caught:
        parse_document(bomb, "application/yaml")
    assert caught.value.reason == "malformed_document"


def test_yaml_does_not_build_python_objects() -> None:
    with pytest.raises(ValidationError):
        parse_document(b"!!python/object/apply:os.system ['true']", "text/yaml")


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [(b"", "application/json"), (b"{", "application/json"), (b"a: [", "application/yaml")],
)
def test_malformed_documents_are_400(raw: bytes, content_type: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_document(raw, content_type)
    assert caught.value.reason == "malformed_document"


def test_validation_names_the_path_of_each_problem() -> None:
    broken = {**DOCUMENT, "apis": [{"api": "bad name"}], "extra": 1}
    with pytest.raises(ValidationError) as caught:
        validate_document(broken)
    fields = {e["field"] for e in caught.value.details["errors"]}
    assert {"apis.0.api", "extra"} <= fields


def test_yaml_document_round_trips_through_yaml_library() -> None:
    text = yaml.safe_dump(DOCUMENT)
    assert validate_document(parse_document(text.encode(), "application/x-yaml")).app.name == "Blog"


def test_file_names_are_ascii_for_the_download_header() -> None:
    for name, expected in [
        ("博客 Blog!", "Blog.json"),
        ("博客", "app.json"),
        ("my app", "my-app.json"),
    ]:
        document = {**DOCUMENT, "app": {"name": name}}
        assert dump_document(document, "json")[2] == expected


def test_the_download_name_keeps_the_apps_own_name() -> None:
    for name, expected in [
        ("博客 Blog!", "博客 Blog!.json"),
        ("a/b\\c", "a b c.json"),
        ("line\nbreak\u2028", "line break.json"),
        ("\t", "app.json"),
        ("长" * 150, "长" * 100 + ".json"),
    ]:
        assert download_name({**DOCUMENT, "app": {"name": name}}, "json") == expected
