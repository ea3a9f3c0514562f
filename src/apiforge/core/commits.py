"""Work bound to the commit of a write transaction on the embedded database, run on the thread
that commits it: the charges' writer (billing/charging.py) runs such hooks, and the answer log
(idempotency/answer_log.py) is one — it writes the answers a transaction carries right before
that transaction commits."""

import sqlite3
from typing import Protocol


class CommitRefused(Exception):  # noqa: N818 - a refusal the writer acts on, not a failure
    """Raised by `CommitHooks.before_commit`: this transaction must not commit. The writer
    rolls it back and does its work again one piece at a time; the hook refuses the pieces at
    fault then (their calls fail with 409), so the rest still commits."""


class CommitHooks(Protocol):
    def before_commit(self, db: sqlite3.Connection) -> None:
        """Last statements of the transaction on `db`, right before its commit; raising
        `CommitRefused` (or anything else) stops the commit: the transaction rolls back."""
        ...

    def after_rollback(self) -> None:
        """The transaction rolled back: what `before_commit` would have done is void."""
        ...
