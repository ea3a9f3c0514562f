"""Client file names and content types: bare names, safe headers."""

import pytest

from apiforge.files.naming import clean_content_type, clean_name
from apiforge.tools.disposition import content_disposition


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("a/b\\c.txt", "c.txt"),
        ("  spaced.txt  ", "spaced.txt"),
        ("new\r\nline.txt", "newline.txt"),
        ("", "file"),
        ("..", "file"),
        ("dir/", "file"),
        ("e\u0301.txt", "\u00e9.txt"),  # NFC
    ],
)
def test_clean_name_keeps_a_bare_printable_name(given: str, kept: str) -> None:
    assert clean_name(given) == kept


def test_long_names_are_cut_keeping_the_extension() -> None:
    name = clean_name("x" * 400 + ".tar.gz")
    assert len(name) == 255
    assert name.endswith("x.gz")
    assert len(clean_name("y" * 300)) == 255


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("image/png", "image/png"),
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        ("", "application/octet-stream"),
        ("not a type", "application/octet-stream"),
        ("text/html\r\nX-Injected: 1", "application/octet-stream"),
        ("a/" + "b" * 200, "application/octet-stream"),
        # Whitespace is spaces and tabs only: no line breaks or other controls, nothing that
        # is not Latin-1 (a header value must be), before or after the `;`.
        ("text/html\r\n;X-Injected: 1", "application/octet-stream"),
        ("text/html;\nX-Injected: 1", "application/octet-stream"),
        ("text/plain\x0c;x=1", "application/octet-stream"),
        ("text/plain\x85;x=1", "application/octet-stream"),
        ("text/plain\u3000;x=1", "application/octet-stream"),
        ("text/plain;x=1\n", "text/plain;x=1"),  # trailing whitespace is trimmed
        ("text/plain ;\tx=1", "text/plain ;\tx=1"),
    ],
)
def test_clean_content_type_falls_back_to_octet_stream(given: str, kept: str) -> None:
    assert clean_content_type(given) == kept


def test_content_disposition_has_an_ascii_fallback_and_the_exact_name() -> None:
    assert content_disposition('合同 "final".pdf') == (
        'attachment; filename="__ _final_.pdf"; '
        "filename*=UTF-8''%E5%90%88%E5%90%8C%20%22final%22.pdf"
    )
