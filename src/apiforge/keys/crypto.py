"""Key material: new secrets, the SHA-256 that finds them, and the sealed copy signing needs.

A secret is `<kind>-` followed by 40 base62 characters (~238 bits), so it survives copy-paste,
URLs and headers unchanged. It is stored twice, never in clear: its SHA-256 (the lookup — a fast
hash is right for a random 238-bit value, unlike a password) and a Fernet-sealed copy under a key
derived from the server secret with a purpose-specific HKDF `info`, because verifying an HMAC
signature needs the secret itself. A database dump alone therefore reveals neither.
"""

import re
import secrets
import string
from functools import lru_cache

from cryptography.fernet import InvalidToken

from apiforge.tools.hashing import sha256_hex
from apiforge.tools.sealing import derived_fernet

KINDS = ("app", "pk", "ws")
SECRET_LENGTH = 40
PREFIX_LENGTH = 8  # random characters kept visible after `<kind>-`
_ALPHABET = string.ascii_letters + string.digits
_INFO = b"apiforge/keys/signing-secrets/v1"


def new_secret(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown key kind {kind!r}")
    return f"{kind}-" + "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))


_SHAPE = re.compile(rf"(?:{'|'.join(KINDS)})-[A-Za-z0-9]{{{SECRET_LENGTH}}}")


def looks_like_key(text: str) -> bool:
    """A cheap syntactic check, so garbage never costs a lookup."""
    return _SHAPE.fullmatch(text) is not None


def kind_of(secret: str) -> str:
    return secret.partition("-")[0]


def visible_prefix(secret: str) -> str:
    kind, _, body = secret.partition("-")
    return f"{kind}-{body[:PREFIX_LENGTH]}"


def secret_hash(secret: str) -> str:
    return sha256_hex(secret)


class SecretSealer:
    """Seals and opens key secrets; derived once per server secret (see `sealer_for`)."""

    __slots__ = ("_fernet",)

    def __init__(self, server_secret: str) -> None:
        self._fernet = derived_fernet(server_secret, _INFO)

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def open(self, sealed: str) -> str | None:
        """The secret, or None when it was sealed under another server secret (rotated)."""
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            return None

    def __repr__(self) -> str:  # never show key material in logs or tracebacks
        return "SecretSealer(<key hidden>)"


@lru_cache(maxsize=8)
def sealer_for(server_secret: str) -> SecretSealer:
    return SecretSealer(server_secret)
