"""Gateway answers that may carry a secret, sealed while they are kept for replay.

An API that signs end-user tokens, takes a sensitive arg, reads encrypted fields or app secrets,
or answers with what another API or host said (`CompiledApi.sealed_answers`) would otherwise
leave that secret in the answer log or the `idempotency_records` table, in clear, for the whole
retention period — a database dump would hand out valid tokens. Sealed answers are AES-256-GCM
under a key derived from the server secret (one cipher pass of the answer's bytes, about a
microsecond per 4 KiB); other answers are stored as they are, at no cost.
"""

import os

from cryptography.exceptions import InvalidTag

from apiforge.idempotency.claims import AnswerLostError
from apiforge.tools.sealing import derived_aead

# No answer stored in clear starts with a NUL (the gateway's answers are JSON envelopes).
_MARK = b"\x00sealed:g1:"
_PURPOSE = b"apiforge/idempotency/gateway-answers/v1"
_NONCE = 12


def seal_answer(secret: str, body: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return _MARK + nonce + derived_aead(secret, _PURPOSE).encrypt(nonce, body, None)


def open_answer(secret: str, stored: bytes) -> bytes:
    """The answer's bytes. One sealed under a server secret since replaced can't be given back:
    409 `idempotency_answer_lost`, as for an answer lost in a crash."""
    if not stored.startswith(_MARK):
        return stored
    start = len(_MARK)
    nonce, sealed = stored[start : start + _NONCE], stored[start + _NONCE :]
    try:
        return derived_aead(secret, _PURPOSE).decrypt(nonce, sealed, None)
    except InvalidTag:
        raise AnswerLostError() from None
