"""Password hashing with argon2id; cost parameters come from settings (cheap ones in tests).

Console passwords are Unicode-normalised (NFKC) before hashing and verifying: NIST SP 800-63B
§5.1.1.2 asks verifiers to apply NFKC or NFKD, so "é" typed as one code point or as e + a
combining accent, or a full-width letter from an IME, is the same password. The engine's `password`
step keeps hashing what the app gives it (its builders decide).
"""

import unicodedata
from enum import Enum

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
_DEFAULT = PasswordHasher()  # argon2-cffi's own cost: hashes made with it always verify
_dummy_hash: str | None = None


def configure(time_cost: int, memory_kib: int, parallelism: int) -> None:
    """Set the argon2 cost once at start-up; existing hashes keep verifying and get rehashed."""
    global _hasher, _dummy_hash
    if (_hasher.time_cost, _hasher.memory_cost, _hasher.parallelism) != (
        time_cost,
        memory_kib,
        parallelism,
    ):
        _hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        _dummy_hash = None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Unknown accounts still pay one verification, so timing doesn't reveal which exist."""
    global _dummy_hash
    if password_hash is None:
        _dummy_hash = _dummy_hash or _hasher.hash("apiforge-timing-equaliser")
    try:
        return _hasher.verify(password_hash or _dummy_hash or "", password) and (
            password_hash is not None
        )
    except (VerificationError, InvalidHashError):
        return False


def normalise_password(password: str) -> str:
    """NFKC: the compatibility form, so keyboard and IME variants of one password agree."""
    return unicodedata.normalize("NFKC", password)


class Verdict(Enum):
    """A console password check: wrong, right, or right but the stored hash wants redoing
    (argon2 cost changed, or it was made before passwords were normalised)."""

    WRONG = "wrong"
    RIGHT = "right"
    REHASH = "rehash"


def hash_console_password(password: str) -> str:
    return hash_password(normalise_password(password))


def check_console_password(password_hash: str | None, password: str) -> Verdict:
    """The normalised form first; then, for hashes made before normalisation, the form as typed
    (a match there asks for a rehash to the normalised form). An input that is already
    normalised costs one argon2 run; one that is not costs two whether or not the account exists,
    so timing still doesn't reveal which do."""
    normal = normalise_password(password)
    if verify_password(password_hash, normal):
        assert password_hash is not None
        return Verdict.REHASH if needs_rehash(password_hash) else Verdict.RIGHT
    if normal != password and verify_password(password_hash, password):
        return Verdict.REHASH
    return Verdict.WRONG


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def cost_allowed(password_hash: str) -> bool:
    """Whether verifying `password_hash` costs no more than hashing does here (or than
    argon2-cffi's defaults): the cost is read from the hash itself, so a crafted one
    (`m=4000000`, `t=100000`) would otherwise take gigabytes or hours. Not an argon2 hash: True
    (`verify_password` refuses it cheaply)."""
    try:
        cost = extract_parameters(password_hash)
    except InvalidHashError:
        return True
    return (
        cost.time_cost <= max(_hasher.time_cost, _DEFAULT.time_cost)
        and cost.memory_cost <= max(_hasher.memory_cost, _DEFAULT.memory_cost)
        and cost.parallelism <= max(_hasher.parallelism, _DEFAULT.parallelism)
    )
