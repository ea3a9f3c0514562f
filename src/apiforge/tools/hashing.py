"""Hashes for secrets we look up (tokens, keys): fast SHA-256, never for passwords."""

import hashlib
import hmac
import secrets


def sha256_hex(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()


def random_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def same(a: str, b: str) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(a.encode(), b.encode())
