"""Input rules of keys: origins, CIDRs, list sizes (`keys/schemas.py`)."""

import pytest
from pydantic import ValidationError

from apiforge.keys.schemas import ApiKeyCreate, ApiKeyUpdate, normalise_origin


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://app.example.com", "https://app.example.com"),
        ("HTTPS://App.Example.COM", "https://app.example.com"),
        ("https://app.example.com/", "https://app.example.com"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("http://127.0.0.1:80", "http://127.0.0.1"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_origins_are_normalised_to_what_browsers_send(text: str, expected: str) -> None:
    assert normalise_origin(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "*",
        "app.example.com",
        "ftp://app.example.com",
        "javascript:alert(1)",
        "https://app.example.com/path",
        "https://app.example.com?q=1",
        "https://app.example.com#x",
        "https://user@app.example.com",
        "https://app.example.com:99999",
        "<script>alert(1)</script>",
    ],
)
def test_anything_but_an_origin_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"origin|port"):
        normalise_origin(text)


def test_create_normalises_ip_ranges_and_origins() -> None:
    body = ApiKeyCreate.model_validate(
        {
            "type": "pk",
            "name": " web ",
            "appId": "x",
            "allowedIps": ["10.1.2.3/8", "203.0.113.5"],
            "allowedOrigins": ["HTTPS://App.Example.com:443"],
        }
    )
    assert body.name == "web"
    assert body.allowed_ips == ["10.0.0.0/8", "203.0.113.5/32"]
    assert body.allowed_origins == ["https://app.example.com"]


@pytest.mark.parametrize(
    "body",
    [
        {"type": "sk", "name": "x"},
        {"type": "app", "name": ""},
        {"type": "app", "name": "x" * 101},
        {"type": "ws", "name": "x", "role": "owner"},
        {"type": "app", "name": "x", "allowedIps": ["10.0.0.0/33"]},
        {"type": "app", "name": "x", "allowedIps": ["10.0.0.1"] * 21},
        {"type": "pk", "name": "x", "allowedOrigins": ["https://a.example"] * 21},
        {"type": "app", "name": "x", "expiresTime": "soon"},
        {"type": "app", "name": "x", "secret": "mine"},
        {"type": "app", "name": ["x"]},
    ],
)
def test_create_refuses_bad_input(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ApiKeyCreate.model_validate(body)


def test_update_tells_a_null_expiry_from_an_absent_one() -> None:
    assert "expires_time" in ApiKeyUpdate.model_validate({"expiresTime": None}).model_fields_set
    assert "expires_time" not in ApiKeyUpdate.model_validate({"name": "n"}).model_fields_set
