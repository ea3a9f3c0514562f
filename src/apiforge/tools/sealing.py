"""Encryption at rest under keys derived from the one server secret.

Each use (app secrets, API-key copies, encrypted record fields, stored answers that hold secrets)
derives its own Fernet key with HKDF-SHA256 and a purpose-specific `info`, so one secret
configures the server, no second key file has to be kept in step, and the ciphertexts of one use
stay independent of every other. Rotating the server secret makes existing ciphertexts unreadable.
"""

import base64
from functools import lru_cache

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


@lru_cache(maxsize=32)
def derived_fernet(secret: str, purpose: bytes) -> Fernet:
    """The Fernet key of `purpose` under the server `secret`, derived once per process (HKDF is
    cheap, not free, and some callers seal on every call)."""
    if not secret:
        raise ValueError("an encryption secret is required")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        secret.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))
