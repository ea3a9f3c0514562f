"""Client-given file names and content types made safe to keep and to send back."""

import re
import unicodedata

from apiforge.files.models import MAX_CONTENT_TYPE_LENGTH, MAX_NAME_LENGTH

DEFAULT_NAME = "file"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# type/subtype with optional parameters, RFC 9110 token characters only (no quotes), the
# whitespace around `;` spaces and tabs only: `\s` would let a line break, another control or a
# non-Latin-1 space into what downloads send back as a header value.
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+([ \t]*;[ \t]*[!-~ \t]*)?")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u0080-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean_name(raw: str) -> str:
    """The bare name of what a client called its file: the last segment of any path (`/` or
    `\\`), NFC-normalised, without control or bidirectional-override characters, trimmed, at
    most 255 characters (the extension kept); `file` when nothing usable is left. It is only ever
    shown and sent back, never used as a path."""
    name = unicodedata.normalize("NFC", raw)
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("", name).strip()
    if name in ("", ".", ".."):
        return DEFAULT_NAME
    if len(name) > MAX_NAME_LENGTH:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and len(ext) <= 16:
            name = stem[: MAX_NAME_LENGTH - len(ext) - 1] + "." + ext
        else:
            name = name[:MAX_NAME_LENGTH]
    return name


def clean_content_type(raw: str) -> str:
    """The part's declared media type when well-formed, else `application/octet-stream`."""
    value = raw.strip()
    if not value or len(value) > MAX_CONTENT_TYPE_LENGTH or not _CONTENT_TYPE.fullmatch(value):
        return DEFAULT_CONTENT_TYPE
    return value
