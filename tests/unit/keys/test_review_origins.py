"""Origins are stored in the form browsers send (`keys/schemas.py`): internationalised hosts in
their ASCII form, and nothing a browser would never send (NUL, spaces, control characters)."""

import pytest

from apiforge.keys.schemas import normalise_origin


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://bücher.example", "https://xn--bcher-kva.example"),
        ("HTTPS://Bücher.Example:443", "https://xn--bcher-kva.example"),
        ("http://пример.испытание:8080", "http://xn--e1afmkfd.xn--80akhbyknj4f:8080"),
        ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
    ],
)
def test_internationalised_hosts_are_stored_as_browsers_send_them(text: str, expected: str) -> None:
    assert normalise_origin(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "https://faß.example",  # IDNA 2003 gives fass.example, browsers xn--fa-hia.example
        "https://a\u200db.example",
        "https://a\x00b.example",
        "https://a b.example",
        "https://a\tb.example",
        "https://a\x7fb.example",
        "https://" + "ü" * 70 + ".example",  # a label longer than 63 characters
    ],
)
def test_hosts_no_browser_would_send_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"origin|ASCII"):
        normalise_origin(text)
