"""What a claim of an idempotency key is, what a stored answer is, and the refusals a claim
can meet: shared by the store (store.py) and the in-memory claims (local_claims.py)."""

from dataclasses import dataclass

from apiforge.core.errors import ApiforgeError, ConflictError
from apiforge.idempotency.answer_log import Answer


class KeyInUseError(ConflictError):
    reason = "idempotency_key_in_use"
    message = "A request with this idempotency key is still running; retry shortly"

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})


class KeyMismatchError(ApiforgeError):
    status = 422
    reason = "idempotency_key_mismatch"
    message = "This idempotency key was already used with a different request"

    def __init__(self, stored: str = "") -> None:
        super().__init__()
        # The fingerprint the key's record holds (never shown): the edges compare it with the
        # request's fingerprint of the earlier, unkeyed form (`keys.legacy_fingerprint`).
        self.stored = stored


class AnswerLostError(ConflictError):
    reason = "idempotency_answer_lost"
    message = (
        "The request with this idempotency key ran, but its stored answer was lost in a crash; "
        "check its effects before sending it again under a new key"
    )


@dataclass(slots=True)
class Claim:
    """This request owns the key: it must `complete` it with the response or `release` it."""

    id: str
    owner: str
    local: bool = False  # claimed in this process's memory (local_claims.py)
    fingerprint: str = ""
    answer: Answer | None = None  # a local claim's answer, once handed to the answer log


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: dict[str, str]
    body: bytes
