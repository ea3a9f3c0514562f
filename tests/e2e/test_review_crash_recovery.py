"""Crash consistency under load: `apiforge serve` is killed (SIGKILL) while concurrent clients
make charged calls — keyed writes (`hit`, one record each), keyed reads (`total` in the call's
own transaction; `page`, which on SQLite checks no connection out: its charge and answer ride
the process's writer, in a group commit) and unkeyed writes — and restarted on the same data,
round after round: killed at a random answer, right after the answer log recovered the last
crash, right after a fresh `page` answer, and while starting. Then, after the last restart:

- every key answered 200 before a kill is replayed byte for byte, and no key ran twice (one
  record per keyed `hit`, one charge per keyed read), whether its call was answered, lost in
  flight or sent again after the crash;
- the ledger balances (each transaction sums to zero, each balance is the sum of its entries,
  `held` is what the live holds add up to), every charge has its 200 request-log row (which is
  what `callsPerMonth` counts) and each charge of a `hit` its record — nothing half committed.

On PostgreSQL a key whose call died in flight keeps its unfinished row for its lease (at least
60 s, docs/idempotency.md): its retries get 409 `idempotency_key_in_use`, and such a key must
have committed nothing."""

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, select

from apiforge.billing.models import LedgerEntry, Wallet, WalletHold
from apiforge.core.settings import Settings
from apiforge.datasets.models import Record
from apiforge.usage.models import RequestLog
from tests._servers import killed_while_starting, running_servers
from tests.conftest import DATABASE_URL
from tests.e2e._apps import new_api
from tests.e2e._idempotency import hits_app
from tests.e2e._keys import app_key, call
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, make_admin, register

KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
CLIENTS = 24
NEW_KEYS = 32  # keys of each kind first sent in a round (retried in every later one)
UNKEYED = 20  # unkeyed `hit` calls of a round (record n = -1)
READS = ("total", "page")
PAGE = [{"id": "page", "type": "getMany", "collection": "hits", "pageSize": 5}]
# A key whose call died in flight: PostgreSQL keeps its unfinished row for the lease.
IN_USE_ALLOWED = bool(DATABASE_URL)


@dataclass(frozen=True)
class Call:
    api: str  # "hit" (writes the record {"n": n}), "total" or "page" (read)
    key: str | None
    n: int = -1


@dataclass
class Market:
    consumer: User
    app_id: str
    secret: str


@dataclass
class Seen:
    """What the clients saw: the first 200 body of each key, the keys refused as in use."""

    answers: dict[str, bytes] = field(default_factory=dict)
    in_use: set[str] = field(default_factory=set)
    lost: int = 0  # calls that got no answer (the kill)


async def _market(app: FastAPI, client: AsyncClient) -> Market:
    """A consumer of the `hits` app (and its `page`) on a plan that limits nothing by rate or
    concurrency."""
    owner, consumer = await register(client), await register(client)
    app_id = await hits_app(client, owner)
    await new_api(client, owner.headers, app_id, "page", price=100, steps=PAGE)
    published = f"/api/v1/apps/{app_id}/versions"
    data_of(await client.post(published, json={"bump": "minor"}, headers=owner.headers))
    _, secret = await app_key(client, consumer, app_id)
    admin = await make_admin(app, client)
    quotas = {"requestsPerMinute": -1, "concurrentRequests": -1, "callsPerMonth": -1}
    await on_plan(client, admin, consumer.workspace_id, "unlimited", **quotas)
    return Market(consumer, app_id, secret)


def _calls(round_: int, earlier: list[Call], rng: random.Random) -> list[Call]:
    """This round's new keyed and unkeyed calls and a retry of every earlier key, shuffled."""
    base = round_ * NEW_KEYS
    fresh = [Call("hit", f"h{base + i}", base + i) for i in range(NEW_KEYS)]
    fresh += [Call(READS[i % 2], f"r{base + i}") for i in range(NEW_KEYS)]
    calls = [*fresh, *earlier, *(Call("hit", None) for _ in range(UNKEYED))]
    rng.shuffle(calls)
    earlier.extend(fresh)
    return calls


async def _send(http: AsyncClient, m: Market, c: Call) -> Response:
    headers = {KEY: c.key} if c.key else {}
    args = {"n": c.n} if c.api == "hit" else None
    return await call(http, m.secret, m.app_id, c.api, args, headers=headers)


def _check(c: Call, response: Response, seen: Seen) -> None:
    """A key answered before is replayed with the same bytes; nothing else is refused."""
    if c.key is not None and response.status_code == 409 and IN_USE_ALLOWED:
        assert c.key not in seen.answers, response.text
        assert_error(response, 409, "idempotency_key_in_use")
        seen.in_use.add(c.key)
        return
    assert response.status_code == 200, (c, response.text)
    if c.key is None:
        return
    if c.key in seen.answers:
        assert response.headers.get(REPLAYED) == "1", (c, response.text)
        assert response.content == seen.answers[c.key], c
    else:
        seen.answers[c.key] = response.content


async def _bounded(calls: Iterable[Call], send: Callable[[Call], Awaitable[None]]) -> None:
    """`calls` by `CLIENTS` concurrent clients. A call that gets no answer (its server was
    killed) is simply not answered."""
    tickets = iter(calls)

    async def client() -> None:
        for c in tickets:  # shared: each call is taken by exactly one client
            try:
                await send(c)
            except httpx.TransportError:
                continue

    await asyncio.gather(*(client() for _ in range(CLIENTS)))


# When to kill, from the number of answers so far and the latest call and answer.
KillWhen = Callable[[int, Call, Response], bool]


def after_answers(count: int) -> KillWhen:
    return lambda answered, _c, _r: answered >= count


def after_a_grouped_charge(answered: int, c: Call, response: Response) -> bool:
    """Right after a `page` call ran and was answered: on SQLite its charge and answer were
    committed by the writer's group commit, which must come before the answer goes out."""
    return c.api == "page" and REPLAYED not in response.headers


async def _killed_round(
    settings: Settings, m: Market, calls: list[Call], kill_when: KillWhen, seen: Seen
) -> None:
    """A server on the data runs `calls` and is SIGKILLed once `kill_when` says so."""
    async with (
        running_servers(settings, count=1) as servers,
        AsyncClient(base_url=servers[0], timeout=60) as http,
    ):
        answered = 0

        async def send(c: Call) -> None:
            nonlocal answered
            response = await _send(http, m, c)
            _check(c, response, seen)
            answered += 1
            if servers.alive(0) and kill_when(answered, c, response):
                servers.kill(0)

        await _bounded(calls, send)
        assert not servers.alive(0), "the load ended before the kill"
        seen.lost += len(calls) - answered


async def _last_round(settings: Settings, m: Market, keys: list[Call], seen: Seen) -> None:
    """Every key once more on a server that is not killed: each is answered (or, on PostgreSQL,
    still in use), a key answered before by its replay."""
    seen.in_use.clear()  # what is in use now is what counts
    async with (
        running_servers(settings, count=1) as servers,
        AsyncClient(base_url=servers[0], timeout=60) as http,
    ):

        async def send(c: Call) -> None:
            _check(c, await _send(http, m, c), seen)

        await _bounded(keys, send)
    assert set(seen.answers) | seen.in_use == {c.key for c in keys}


async def _audit(app: FastAPI, m: Market, keys: list[Call], seen: Seen) -> None:
    """The database after the crashes: money, log rows and records agree with one run per key."""
    workspace = m.consumer.workspace_id
    async with app.state.engine.connect() as conn:
        records = Counter(
            data["n"]
            for (data,) in await conn.execute(
                select(Record.data).where(Record.partition == workspace)
            )
        )
        entries = (
            await conn.execute(
                select(
                    LedgerEntry.transaction_id,
                    LedgerEntry.wallet_id,
                    LedgerEntry.amount,
                    LedgerEntry.kind,
                    LedgerEntry.workspace_id,
                    LedgerEntry.api,
                    LedgerEntry.request_id,
                )
            )
        ).all()
        wallets = (await conn.execute(select(Wallet.id, Wallet.balance, Wallet.held))).all()
        holds = dict(
            (
                await conn.execute(
                    select(WalletHold.wallet_id, func.sum(WalletHold.amount)).group_by(
                        WalletHold.wallet_id
                    )
                )
            ).all()
        )
        logged = set(
            (
                await conn.scalars(
                    select(RequestLog.request_id).where(
                        RequestLog.workspace_id == workspace, RequestLog.status == 200
                    )
                )
            ).all()
        )
    transactions: Counter[str] = Counter()
    sums: Counter[str] = Counter()
    for entry in entries:
        transactions[entry.transaction_id] += entry.amount
        sums[entry.wallet_id] += entry.amount
    assert {t for t, total in transactions.items() if total != 0} == set()
    for wallet in wallets:
        assert wallet.balance == sums[wallet.id], wallet
        assert wallet.held == int(holds.get(wallet.id, 0)), wallet  # SQLite: never any hold
    paid = [e for e in entries if e.kind == "call" and e.workspace_id == workspace]
    assert len({e.request_id for e in paid}) == len(paid)  # one charge per request
    assert {e.request_id for e in paid} <= logged  # every charge has its 200 row
    charged = Counter(e.api for e in paid)
    assert charged["hit"] == sum(records.values())  # a record per `hit` charge, and the reverse
    ran = {c.key for c in keys} - seen.in_use
    for api in READS:
        assert charged[api] == len([c for c in keys if c.api == api and c.key in ran]), api
    for c in keys:
        if c.api == "hit":
            assert records[c.n] == (1 if c.key in ran else 0), c
    assert set(records) <= {-1} | {c.n for c in keys if c.api == "hit"}


async def test_killed_servers_leave_one_run_per_key_and_a_balanced_ledger(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    """Three servers killed under load — at a random answer, right after the first answer
    (just past the answer log's recovery of the first crash), right after a call charged by
    the writer was answered —, a kill during startup before each restart; then every key once
    more and an audit of the database."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    m = await _market(app, client)
    first = NEW_KEYS * 2 + UNKEYED
    kills = [after_answers(rng.randrange(first // 4, first // 2)), after_answers(1)]
    kills.append(after_a_grouped_charge)
    keys: list[Call] = []
    seen = Seen()
    try:
        for round_, kill_when in enumerate(kills):
            if round_:
                await killed_while_starting(settings, rng.uniform(0.0, 1.5))
            await _killed_round(settings, m, _calls(round_, keys, rng), kill_when, seen)
        assert seen.lost >= len(kills)  # every kill landed with calls in flight
        await killed_while_starting(settings, rng.uniform(0.0, 1.5))
        await _last_round(settings, m, keys, seen)
        await _audit(app, m, keys, seen)
    except BaseException as exc:
        if isinstance(exc, Exception):
            exc.add_note(f"random seed {seed}")
        raise
