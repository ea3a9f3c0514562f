"""Password hashing with argon2id; cost parameters come from settings (cheap ones in tests)."""

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
