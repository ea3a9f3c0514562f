"""Encryption at rest, and keyed digests, under keys derived from the one server secret.

Each use (app secrets and signing secrets, API-key copies, encrypted record fields, stored answers
that hold secrets, idempotency payload fingerprints) derives its own key with HKDF-SHA256 and a
purpose-specific `info`, so one secret configures the server (every process and node that shares
it derives the same keys), no second key file has to be kept in step, and the ciphertexts of one
use stay independent of every other. Rotating the server secret makes existing ciphertexts
unreadable and existing keyed digests unmatchable.
"""

import base64
import os
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from apiforge.tools.hashing import KeyedSha256


def _derived_key(secret: str, purpose: bytes) -> bytes:
    if not secret:
        raise ValueError("an encryption secret is required")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        secret.encode()
    )


@lru_cache(maxsize=32)
def derived_fernet(secret: str, purpose: bytes) -> Fernet:
    """The Fernet key of `purpose` under the server `secret`, derived once per process (HKDF is
    cheap, not free, and some callers seal on every call)."""
    return Fernet(base64.urlsafe_b64encode(_derived_key(secret, purpose)))


@lru_cache(maxsize=32)
def derived_aead(secret: str, purpose: bytes) -> AESGCM:
    """The AES-256-GCM key of `purpose` under the server `secret`, for values that must stay
    short (a column sized for the clear value)."""
    return AESGCM(_derived_key(secret, purpose))


@lru_cache(maxsize=32)
def derived_hmac(secret: str, purpose: bytes) -> KeyedSha256:
    """HMAC-SHA256 under the key of `purpose`, for digests stored where a database dump must not
    let anyone confirm a guess of what was hashed."""
    return KeyedSha256(_derived_key(secret, purpose))


def seal_short(secret: str, purpose: bytes, text: str) -> str:
    """`text` sealed (AES-256-GCM, a random 96-bit nonce) as unpadded URL-safe base64: 28 bytes
    (38 characters) more than the text. Its characters never include `:`."""
    nonce = os.urandom(12)
    sealed = nonce + derived_aead(secret, purpose).encrypt(nonce, text.encode(), None)
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")


def open_short(secret: str, purpose: bytes, sealed: str) -> str | None:
    """The text `seal_short` sealed; None when it was sealed under another secret (or damaged)."""
    try:
        raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
        return derived_aead(secret, purpose).decrypt(raw[:12], raw[12:], None).decode()
    except (InvalidTag, ValueError):
        return None
