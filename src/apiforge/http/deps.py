"""Request-scoped dependencies shared by every router: settings and the one-commit session."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.core.db import unit_of_work
from apiforge.core.settings import Settings
from apiforge.http.schemas import RequestIdText
from apiforge.tools.netpolicy import proxy_policy


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    # scope="function": commit before the response is sent, so a failed commit is a 5xx,
    # never a 200 for work that was lost.
    async with unit_of_work(request.app.state.sessionmaker) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
# `?requestId=` of the lists that record calls (request logs, ledger entries): exact match.
RequestIdFilter = Annotated[
    RequestIdText | None,
    Query(alias="requestId", max_length=128, description="Only this request id's rows (exact)"),
]


def client_ip(request: Request) -> str:
    """The client's address; `X-Forwarded-For` only from a trusted proxy (tools/netpolicy.py)."""
    settings: Settings = request.app.state.settings
    peer = request.client.host if request.client else ""
    policy = proxy_policy(tuple(settings.trusted_proxies))
    return policy.client_ip(peer, ",".join(request.headers.getlist("x-forwarded-for")))
