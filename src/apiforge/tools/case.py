"""camelCase conversion for JSON field names (spec 003 §2.1.1)."""

import re

_BOUNDARY = re.compile(r"_([a-z0-9])")
_UPPER = re.compile(r"(?<!^)(?=[A-Z])")


def to_camel(name: str) -> str:
    return _BOUNDARY.sub(lambda m: m.group(1).upper(), name)


def to_snake(name: str) -> str:
    return _UPPER.sub("_", name).lower()
