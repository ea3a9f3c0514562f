"""Concurrency limits: how many calls may be in flight at once per counter (a caller key, an
app or API, a workspace's plan) — Dify's `max_active_requests`, done atomically.

With Redis each counter is a sorted set of leases, one member per call scored by its expiry
(APISIX limit-conn's design): the acquire script (`store.py`) drops expired leases, checks every
counter of the call and, only when all have room, adds the call's lease to each. A process that
dies mid-call leaks its leases for at most the lease time; every other path releases in the
gateway's `finally`. In process the same rule runs on integers, where nothing can leak.
"""

import itertools
import secrets
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Slot:
    """One counter a call occupies while it runs: `scope` names the limit (key, app, plan)."""

    scope: str
    key: str
    limit: int


_PROCESS = secrets.token_hex(6)
_sequence = itertools.count(1)


def new_member() -> str:
    """A lease id unique across processes (request ids come from clients and may repeat)."""
    return f"{_PROCESS}:{next(_sequence)}"
