"""`/api/v1/wallets`, `/ledger-entries`, `/redemptions`, `/withdrawals`, `/earnings` and the
admin's top-ups and withdrawal decisions."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from apiforge.accounts.deps import AdminAccount, workspace_key
from apiforge.billing.charging import CHARGER_KEY, MemoryWallets
from apiforge.billing.schemas import (
    CreditCreate,
    EarningsReport,
    EntryKind,
    LedgerEntryRead,
    Posted,
    RedemptionCreate,
    RedemptionRead,
    WalletList,
    WithdrawalCreate,
    WithdrawalDecision,
    WithdrawalRead,
    WithdrawalStatus,
)
from apiforge.billing.service import BillingService, EntryFilter, withdrawal_read
from apiforge.billing.usage import MoneyChartService
from apiforge.http.deps import RequestIdFilter, SessionDep
from apiforge.http.envelope import Envelope, ok
from apiforge.http.pagination import Page, PageDep
from apiforge.http.schemas import Created, Text
from apiforge.http.timerange import From, To, time_range
from apiforge.usage.charts import ChartQueryDep, PieChart, TimeSeriesChart
from apiforge.workspaces.deps import CurrentWorkspaceDep, WorkspaceAdmin

router = APIRouter(prefix="/api/v1", tags=["billing"])
# The money charts live with billing's services but are usage routes: a router of their own,
# since an operation tagged `billing` and `usage` lands in `billing` in generated clients.
charts_router = APIRouter(prefix="/api/v1", tags=["usage"])


def _memory(request: Request) -> MemoryWallets | None:
    """The gateway's in-process wallet cache (SQLite only), told about every credit."""
    state = getattr(request.app.state, "gateway_state", None)
    charger: Any = state.extra.get(CHARGER_KEY) if state is not None else None
    memory = getattr(charger, "memory", None)
    return memory if isinstance(memory, MemoryWallets) else None


def _service(request: Request, session: SessionDep) -> BillingService:
    return BillingService(session, request.app.state.settings.welcome_credits, _memory(request))


BillingServiceDep = Annotated[BillingService, Depends(_service)]


@router.get("/wallets", summary="The current workspace's wallets and their balances (RU)")
async def list_wallets(
    current: CurrentWorkspaceDep, service: BillingServiceDep
) -> Envelope[WalletList]:
    return ok(WalletList(list=await service.wallets(current.id)))


@router.get(
    "/ledger-entries",
    summary="Ledger entries of the current workspace's wallets, newest first",
    description="Every movement of RU is a transaction whose entries sum to zero; this lists "
    "the current workspace's side of them. Filter by `kind`, `walletKind`, `appId`, `requestId` "
    "(a call's entries: its caller's debit, or what its app earned), `from`/`to`.",
)
async def list_ledger_entries(
    current: CurrentWorkspaceDep,
    service: BillingServiceDep,
    page: PageDep,
    kind: EntryKind | None = None,
    wallet_kind: Annotated[Literal["balance", "earnings"] | None, Query(alias="walletKind")] = None,
    app_id: Annotated[Text | None, Query(alias="appId", max_length=26)] = None,
    request_id: RequestIdFilter = None,
    since: From = None,
    until: To = None,
) -> Envelope[Page[LedgerEntryRead]]:
    start, end = time_range(since, until)
    filters = EntryFilter(
        kind=kind,
        app_id=app_id or None,
        wallet_kind=wallet_kind,
        request_id=request_id or None,
        since=start,
        until=end,
    )
    return ok(await service.entries(current.id, filters, page))


@router.get(
    "/admin/wallets",
    summary="The platform's wallets (administrators)",
    description="`revenue` (the cost of every call), `issuance` (minus every RU ever issued), "
    "`escrow` (requested withdrawals) and `payouts` (approved withdrawals).",
)
async def list_platform_wallets(
    admin: AdminAccount, service: BillingServiceDep
) -> Envelope[WalletList]:
    return ok(WalletList(list=await service.platform_wallets()))


@router.post(
    "/admin/wallets/{workspace_id}/credits",
    summary="Top up a workspace's wallet (administrators)",
    description="Credits the workspace's spendable wallet from the platform's issuance wallet.",
)
async def credit_wallet(
    workspace_id: str, body: CreditCreate, admin: AdminAccount, service: BillingServiceDep
) -> Envelope[Posted]:
    transaction_id, balance = await service.top_up(admin.id, workspace_id, body.amount, body.note)
    return ok(Posted(id=transaction_id, balance=balance))


@router.get(
    "/earnings",
    summary="What the current workspace's apps earned, per day, app and API",
    description="A page of rows (`pageNo`, `pageSize`; `sort=day`), newest day first; `total` "
    "is what the whole `from`/`to` range earned.",
)
async def list_earnings(
    current: CurrentWorkspaceDep,
    service: BillingServiceDep,
    page: PageDep,
    since: From = None,
    until: To = None,
) -> Envelope[EarningsReport]:
    start, end = time_range(since, until)
    return ok(await service.earnings(current.id, start, end, page))


@router.post(
    "/redemptions",
    summary="Redeem earned RU into a spendable wallet (workspace admins)",
    description="Moves RU from the current workspace's earnings to the spendable wallet of "
    "`targetWorkspaceId` (a workspace the caller belongs to; default: the current one).",
)
async def create_redemption(
    request: Request,
    body: RedemptionCreate,
    current: CurrentWorkspaceDep,
    service: BillingServiceDep,
) -> Envelope[Created]:
    by_key = workspace_key(request) is not None
    transaction_id = await service.redeem(
        current, body.amount, body.target_workspace_id, by_workspace_key=by_key
    )
    return ok(Created(id=transaction_id))


@router.get("/redemptions", summary="Redemptions out of the current workspace's earnings")
async def list_redemptions(
    current: CurrentWorkspaceDep, service: BillingServiceDep, page: PageDep
) -> Envelope[Page[RedemptionRead]]:
    return ok(await service.redemptions(current.id, page))


@router.post(
    "/withdrawals",
    summary="Request a withdrawal of earned RU (workspace admins)",
    description="The amount leaves the earnings wallet at once (held in escrow) until an "
    "administrator approves or rejects it; 402 when the earnings don't cover it.",
)
async def create_withdrawal(
    body: WithdrawalCreate, current: WorkspaceAdmin, service: BillingServiceDep
) -> Envelope[Created]:
    withdrawal = await service.request_withdrawal(current, body.amount, body.note)
    return ok(Created(id=withdrawal.id))


@router.get("/withdrawals", summary="The current workspace's withdrawals, newest first")
async def list_withdrawals(
    current: CurrentWorkspaceDep,
    service: BillingServiceDep,
    page: PageDep,
    status: WithdrawalStatus | None = None,
) -> Envelope[Page[WithdrawalRead]]:
    return ok(await service.withdrawals(current.id, status, page))


@router.get("/admin/withdrawals", summary="Withdrawals of every workspace (administrators)")
async def admin_list_withdrawals(
    admin: AdminAccount,
    service: BillingServiceDep,
    page: PageDep,
    status: WithdrawalStatus | None = None,
) -> Envelope[Page[WithdrawalRead]]:
    return ok(await service.withdrawals(None, status, page))


@router.patch(
    "/admin/withdrawals/{withdrawal_id}",
    summary="Approve or reject a requested withdrawal (administrators)",
    description="`approved`: the RU leave through the platform's payouts wallet; `rejected`: "
    "they return to the workspace's earnings. A decided withdrawal can't change (409).",
)
async def decide_withdrawal(
    withdrawal_id: str,
    body: WithdrawalDecision,
    admin: AdminAccount,
    service: BillingServiceDep,
) -> Envelope[WithdrawalRead]:
    withdrawal = await service.decide_withdrawal(admin.id, withdrawal_id, body.status, body.note)
    return ok(withdrawal_read(withdrawal))


def _charts(session: SessionDep) -> MoneyChartService:
    return MoneyChartService(session)


MoneyChartDep = Annotated[MoneyChartService, Depends(_charts)]
AppFilter = Annotated[
    Text | None, Query(alias="appId", max_length=26, description="Only this app's calls")
]


@charts_router.get(
    "/usage/spend",
    summary="RU the workspace spent on calls per hour or day and per app or API (zero-filled "
    "xAxis/series), or their shares (chart=pie)",
)
async def usage_spend(
    current: CurrentWorkspaceDep,
    service: MoneyChartDep,
    query: ChartQueryDep,
    app_id: AppFilter = None,
) -> Envelope[TimeSeriesChart | PieChart]:
    return ok(await service.chart(current, query, "spend", app_id or None))


@charts_router.get(
    "/usage/earnings",
    summary="RU the workspace's apps earned (price minus cost) per hour or day and per app or "
    "API (zero-filled xAxis/series), or their shares (chart=pie)",
)
async def usage_earnings(
    current: CurrentWorkspaceDep,
    service: MoneyChartDep,
    query: ChartQueryDep,
    app_id: AppFilter = None,
) -> Envelope[TimeSeriesChart | PieChart]:
    return ok(await service.chart(current, query, "earnings", app_id or None))
