"""Request and response bodies of the wallet, ledger, redemption and withdrawal routes."""

from typing import Annotated, Literal

from pydantic import Field

from apiforge.billing.models import MAX_AMOUNT
from apiforge.http.pagination import Page
from apiforge.http.schemas import ApiModel, InputModel, Text, Timestamp

Amount = Annotated[
    int,
    Field(
        strict=True,
        gt=0,
        le=MAX_AMOUNT,
        description=f"Whole RU (the smallest unit is 1 RU), 1 to {MAX_AMOUNT}",
    ),
]
EntryKind = Literal[
    "topup",
    "welcome",
    "call",
    "redemption",
    "withdrawal_request",
    "withdrawal_approved",
    "withdrawal_rejected",
]
WithdrawalStatus = Literal["requested", "approved", "rejected"]


class WalletRead(ApiModel):
    """One wallet of the workspace: `balance` (spendable RU) or `earnings` (what its apps
    earned, to redeem or withdraw)."""

    id: str
    kind: str
    balance: int
    updated_time: Timestamp


class WalletList(ApiModel):
    list: list[WalletRead]


class LedgerEntryRead(ApiModel):
    """One wallet's side of one ledger transaction (the amounts of a transaction sum to 0)."""

    id: str
    transaction_id: str
    wallet_id: str
    wallet_kind: str
    amount: int
    kind: str
    created_time: Timestamp
    app_id: str | None
    api: str | None
    request_id: str | None
    counterparty_workspace_id: str | None
    reference_id: str | None
    note: str


class CreditCreate(InputModel):
    amount: Amount
    note: Text = Field(default="", max_length=200)


class Posted(ApiModel):
    """A ledger transaction that was written, and the credited or debited wallet's balance."""

    id: str
    balance: int


class RedemptionCreate(InputModel):
    amount: Amount
    target_workspace_id: str | None = Field(
        default=None,
        max_length=26,
        description="A workspace the caller belongs to (default: the current one)",
    )


class RedemptionRead(ApiModel):
    id: str  # the ledger transaction
    amount: int
    target_workspace_id: str | None
    created_time: Timestamp


class WithdrawalCreate(InputModel):
    amount: Amount
    note: Text = Field(default="", max_length=500)


class WithdrawalDecision(InputModel):
    status: Literal["approved", "rejected"]
    note: Text = Field(default="", max_length=500)


class WithdrawalRead(ApiModel):
    id: str
    workspace_id: str | None
    amount: int
    status: str
    note: str
    decision_note: str
    created_time: Timestamp
    decided_time: Timestamp | None


class EarningRow(ApiModel):
    """What one API of one app earned on one UTC day (price minus cost, summed)."""

    day: str
    app_id: str
    api: str
    calls: int
    amount: int


class EarningsReport(Page[EarningRow]):
    """A page of rows; `total` is what the whole range earned, not only this page."""

    total: int
