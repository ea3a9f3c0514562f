"""Request-log rows for the unit tests: what the gateway's log stage would queue."""

from datetime import datetime, timedelta
from itertools import count
from typing import Any

from apiforge.tools.clock import utcnow
from apiforge.tools.ids import new_id

_seq = count(1)


def log_row(**fields: Any) -> dict[str, Any]:
    """A complete row; `fields` override the defaults (a successful console call)."""
    number = next(_seq)
    created: datetime = fields.pop("created_at", utcnow() - timedelta(seconds=number / 1000))
    row: dict[str, Any] = {
        "id": new_id(),
        "created_at": created,
        "request_id": f"req-{number:08d}",
        "workspace_id": "w" * 26,
        "app_workspace_id": "b" * 26,
        "account_id": None,
        "key_id": None,
        "caller_kind": "console",
        "app_id": "a" * 26,
        "api": "getManyPost",
        "version": "dev",
        "status": 200,
        "reason": "",
        "latency_ms": 1.5,
        "client_ip": "127.0.0.1",
        "args": {"pageNo": number},
        "amount": 0,
    }
    row.update(fields)
    return row
