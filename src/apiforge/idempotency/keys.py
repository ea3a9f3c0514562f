"""The request-identifying headers: parsing, caller scopes, record ids and payload fingerprints.

Pure functions (no I/O), shared by the gateway stage and the management middleware so both edges
agree byte for byte on what a key, a scope and a payload are. Payload fingerprints are keyed
under the server secret (`fingerprint`).
"""

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from typing import Any

from apiforge.core.errors import ValidationError
from apiforge.tools.hashing import KeyedSha256
from apiforge.tools.sealing import derived_hmac

KEY_HEADER = "idempotency-key"
SEQ_HEADER = "x-request-seq"
TOKEN_HEADER = "x-idempotency-token"  # noqa: S105 - a header name, not a secret
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255

# Bare: visible ASCII without `"` and `\`. Quoted: an RFC 8941 sf-string, which may also hold
# spaces, and `"` and `\` escaped with a backslash.
_BARE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_QUOTED = re.compile(r'(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])+')
_ESCAPED = re.compile(r'\\(["\\])')
_SEQ = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")
# The purpose under which payload fingerprints are keyed (tools/sealing.py derives its key).
_FINGERPRINTS = b"apiforge/idempotency/payload-fingerprints/v1"
# What HTTP lets surround a field value (RFC 9110 OWS). Not `str.strip()`'s whitespace, which
# also takes control characters and non-ASCII spaces (`\x1f`, `\x85`, `\xa0` in a header read
# as latin-1) off the ends: `k\xa0` would then be the key `k` instead of a 400.
_OWS = " \t"


def _invalid(header: str, message: str, reason: str = "invalid_idempotency_key") -> ValidationError:
    return ValidationError(message, errors=[{"field": header, "message": message}], reason=reason)


def parse_key(raw: str) -> str:
    """`Idempotency-Key`, quoted (`"k"`, escapes `\\"` and `\\\\` as in RFC 8941) or bare (`k`):
    both name the same key. 400 when empty, longer than 255 characters, or holding anything but
    visible ASCII (and spaces, quoted)."""
    value = raw.strip(_OWS)
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value, pattern = value[1:-1], _QUOTED
    else:
        pattern = _BARE
    if not pattern.fullmatch(value):
        raise _invalid("Idempotency-Key", "must be 1-255 visible ASCII characters")
    if pattern is _QUOTED:
        value = _ESCAPED.sub(r"\1", value)
    if len(value) > MAX_KEY_LENGTH:
        raise _invalid("Idempotency-Key", f"must be at most {MAX_KEY_LENGTH} characters")
    return value


def parse_seq(raw: str) -> str:
    """`X-Request-Seq`: 1-64 characters of `[A-Za-z0-9._:-]` (a number, a snowflake id, ...)."""
    value = raw.strip(_OWS)
    if not _SEQ.fullmatch(value):
        raise _invalid(
            "X-Request-Seq", "must be 1-64 characters of A-Z a-z 0-9 . _ : -", "invalid_request_seq"
        )
    return value


def token_id(raw: str) -> str | None:
    """The stored id (SHA-256) of an anti-duplicate token, or None when it can't be one. A plain
    hash is enough: a token is 256 random bits (`TokenStore.issue`), nothing a guess can reach."""
    value = raw.strip(_OWS)
    if not _TOKEN.fullmatch(value):
        return None
    return hashlib.sha256(value.encode()).hexdigest()


def record_id(kind: str, scope: str, key: str) -> str:
    """The row id of a key in a caller's scope: `kind` keeps keys and sequence numbers apart."""
    # Length-prefixed parts: no scope/key split can collide with another.
    return hashlib.sha256(f"{kind}:{len(scope)}:{scope}:{key}".encode()).hexdigest()


def fingerprint_key(secret: str) -> KeyedSha256:
    """The key of payload fingerprints, derived from the server secret (once per process; every
    process and node sharing the secret derives the same one, so they agree on fingerprints)."""
    return derived_hmac(secret, _FINGERPRINTS)


def fingerprint(key: KeyedSha256, method: str, path: str, query: str, body: bytes) -> str:
    """What makes two requests "the same payload": method, path, query and the exact body.

    Keyed (HMAC-SHA256 under `fingerprint_key`): a body may hold a password, an app's secret
    values or key material, and a plain hash of it, kept for the retention period, would let
    anyone holding a database dump confirm guesses of those values offline."""
    # `_head` inlined, one call fewer: this runs on every keyed gateway call.
    return key.hexdigest(f"{method}\x00{path}\x00{query}\x00".encode(), body)


def fingerprint_hash(key: KeyedSha256, method: str, path: str, query: str) -> hmac.HMAC:
    """`fingerprint` of a body hashed as it arrives: `update` it with the body, then hand it to
    `key.end`."""
    return key.begin(_head(method, path, query))


def legacy_fingerprint(method: str, path: str, query: str, body: Iterable[bytes]) -> str:
    """The fingerprint as stored before it was keyed (plain SHA-256), from the body's chunks.

    Only looked at when a stored fingerprint differs from the request's (`KeyMismatchError`):
    a retry of a request first answered before the upgrade still gets its answer rather than
    422. Such records live at most lease + retention (24 h by default) after the upgrade; the
    same body's plain hash was stored then already, so matching it reveals nothing new."""
    digest = hashlib.sha256(_head(method, path, query))
    for chunk in body:
        digest.update(chunk)
    return digest.hexdigest()


def _head(method: str, path: str, query: str) -> bytes:
    return f"{method}\x00{path}\x00{query}\x00".encode()


def seq_fingerprint(payload: str, workspace: str) -> str:
    """The fingerprint of a management request with `X-Request-Seq`. A sequence number is the
    credential's in every workspace, so the workspace the request acts in (`X-Workspace-Id`, in
    no fingerprinted byte) is part of its payload: the number sent again to act in another
    workspace is another request (422), not the first one's answer (say, an app created in the
    other workspace). A gateway call's workspace follows from its key or its body's app.
    A plain hash is enough here: `payload` is a keyed fingerprint already, not a guessable value."""
    return hashlib.sha256(f"{len(workspace)}:{workspace}:{payload}".encode()).hexdigest()


def principal(key_id: str | None, account_id: str | None) -> str | None:
    """Who holds the credential: a key (`key:<id>`) or a signed-in account (`acct:<id>`)."""
    if key_id:
        return f"key:{key_id}"
    if account_id:
        return f"acct:{account_id}"
    return None


def end_user_scope(who: str, app_id: str, claims: Mapping[str, Any]) -> str:
    """A credential's scope narrowed to the end user whose verified token the call carries (of
    app `app_id`): a publishable key is every end user's, and one end user's key must never
    replay another's answer."""
    subject = str(claims.get("sub", ""))
    return f"{who}|user:{len(app_id)}:{app_id}:{subject}"
