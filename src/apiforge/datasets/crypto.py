"""Encryption at rest of `encrypted` record fields: Fernet with a key derived from the server key.

The key is derived (HKDF-SHA256, a purpose-specific `info`) from `settings.signing_key`, so one
secret configures the server and no second key file has to be kept in step; the derivation keeps
record ciphertexts independent of the JWT signing use of the same secret. Values are serialised to
JSON before encryption, so a field of any type can be encrypted. Rotating the server key makes
existing ciphertexts unreadable: `decrypt` then reports failure instead of guessing.
"""

import base64
from functools import lru_cache
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"apiforge/records/encrypted-fields/v1"


class DecryptionError(Exception):
    """A stored ciphertext does not open with the current key (tampered or key rotated)."""


class FieldCipher:
    """Encrypts and decrypts single field values; safe to share across requests."""

    __slots__ = ("_fernet",)

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("an encryption secret is required")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
            secret.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def encrypt(self, value: Any) -> str:
        return self._fernet.encrypt(orjson.dumps(value)).decode("ascii")

    def decrypt(self, token: Any) -> Any:
        if not isinstance(token, str):
            raise DecryptionError("not a ciphertext")
        try:
            return orjson.loads(self._fernet.decrypt(token.encode("ascii")))
        except (InvalidToken, UnicodeEncodeError, orjson.JSONDecodeError) as exc:
            raise DecryptionError("ciphertext does not open with the current key") from exc

    def __repr__(self) -> str:  # never show key material in logs or tracebacks
        return "FieldCipher(<key hidden>)"


@lru_cache(maxsize=8)
def cipher_for(secret: str) -> FieldCipher:
    """The cipher of a server secret, derived once per process (HKDF is cheap, not free)."""
    return FieldCipher(secret)
