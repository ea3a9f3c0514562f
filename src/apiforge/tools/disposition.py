"""`Content-Disposition` for a download whose name may be any text (a file's, an app's)."""

from urllib.parse import quote


def content_disposition(name: str, fallback: str | None = None) -> str:
    """`attachment` with an ASCII `filename` (`fallback`, else `name` with every character
    outside printable ASCII, and `"`, `\\`, `%`, made `_`) for old clients, and the exact name
    in RFC 8187 `filename*`, which browsers prefer."""
    if fallback is None:
        fallback = name
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in fallback)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
