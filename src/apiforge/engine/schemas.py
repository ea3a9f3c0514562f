"""Request bodies of `/api/v1/invocations` and `/api/v1/workflows`; what a version label is."""

import re
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from apiforge.http.schemas import Flag, InputModel, Text

# The largest part of a published version (`X.Y.Z`). One bound for every place a version is
# named — publishing, reading, `callApi` pins, invocations — so no version is published that
# cannot be called; it fits the 32-bit columns versions are sorted by.
MAX_VERSION_PART = 999_999_999
_PART = r"(0|[1-9][0-9]{0,8})"
# `\Z`, not `$`: Python's `$` also matches before a final newline, so a `callApi` pin of
# "1.0.0\n" was saved, then failed every call (404) and blocked every publish.
SEMVER = re.compile(rf"^{_PART}\.{_PART}\.{_PART}\Z")
# "dev", "latest" or an exact published version.
VersionLabel = Annotated[str, Field(pattern=rf"^(dev|latest|{_PART}\.{_PART}\.{_PART})$")]
# An argument's name exactly as sent: the input models' whitespace trimming also reached the keys
# of `args`, so `{" a": 1, "a": 2}` reached the steps as `{"a": 2}` (and a call's `"a "`, no
# param of the API, ran as `a` instead of being refused).
ArgName = Annotated[str, StringConstraints(strip_whitespace=False)]


# The gateway's 5xx answers, in the envelope: described in the platform's document
# (gateway/openapi.py) and in each app's (builder/openapi.py).
SERVER_ERRORS = (
    "`internal_error` (500), an `httpRequest` step's upstream failing (502 `upstream_*`, 504 "
    "`upstream_timeout`), or a store the check needs being unreachable (503: "
    "`limits_unavailable`, `nonce_store_unavailable`; `nonce_store_full` when a process without "
    "Redis holds as many signed calls' nonces as it keeps; `database_unavailable` when the "
    "database connection was lost midway or the database stopped answering; `database_busy` "
    "when no pooled connection came free in time)"
)


class InvocationCreate(InputModel):
    """`{"appId", "api", "version", "args", "debug"}` (DESIGN.md §4)."""

    app_id: str = Field(min_length=1, max_length=26)
    api: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9]{0,63}$")
    version: VersionLabel = "latest"
    args: dict[ArgName, Any] = Field(default_factory=dict)
    # A per-step trace (input, output, ms, error); only on `dev`.
    debug: Flag = False


class WorkflowCreate(InputModel):
    """`{"appId", "steps", "args", "debug"}`: an ad-hoc step list run once, never stored. Its
    `args` declare no params, so they reach the steps as sent."""

    app_id: Text = Field(min_length=1, max_length=26)
    steps: list[Any] = Field(max_length=200)
    args: dict[ArgName, Any] = Field(default_factory=dict)
    debug: Flag = False
