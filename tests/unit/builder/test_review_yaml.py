"""Import documents in YAML are read by libyaml: PyYAML's pure-Python reader took seconds for a
few KB of nested brackets (a cheap way to stall a server) and ten times longer for any large
document. Found by the builder review."""

import pytest
import yaml

from apiforge.builder.transfer import parse_document
from apiforge.core.errors import ValidationError


def test_yaml_documents_are_read_with_libyaml() -> None:
    assert yaml.__with_libyaml__  # PyYAML's wheels bundle it; the fallback is the slow reader
    from apiforge.builder import transfer

    assert transfer._YAML_LOADER is yaml.CSafeLoader


@pytest.mark.parametrize(
    "raw",
    [b"[" * 20_000 + b"]" * 20_000, b"a: &x [1]\nb: *x\n", b"a: !!python/name:os.system\n"],
)
def test_hostile_yaml_is_a_malformed_document(raw: bytes) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_document(raw, "application/yaml")
    assert caught.value.reason == "malformed_document"


def test_yaml_values_read_as_before() -> None:
    document = (
        b"app:\n  name: Blog\n  config: {pageSize: 20, ratio: 0.5, enabled: true, tags: [a]}\n"
    )
    assert parse_document(document, "application/yaml; charset=utf-8") == {
        "app": {
            "name": "Blog",
            "config": {"pageSize": 20, "ratio": 0.5, "enabled": True, "tags": ["a"]},
        }
    }
