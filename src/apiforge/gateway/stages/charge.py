"""Stage 9 and 11 of a priced call: reserve the price before the steps (402
`insufficient_balance`), charge it with the steps' own commit, release it when the call fails.

The money logic is `billing/charging.py`; this stage only reads the call: who pays (the calling
workspace), who earns (the app's workspace), the API's price and cost from its compiled plan. A
call that moves nothing (price 0, or a workspace's own free API) does nothing here at all.
"""

from apiforge.billing.charging import CHARGER_KEY, Charger, make_charger, split
from apiforge.gateway.context import GatewayContext
from apiforge.gateway.stage import GatewayState
from apiforge.gateway.stages.log import RequestLogStage


async def close_charger(state: GatewayState) -> None:
    """Commit and close what the charger holds (SQLite's writer connection): at shutdown."""
    charger = state.extra.get(CHARGER_KEY)
    if charger is not None:
        await charger.close()


def charger_of(state: GatewayState) -> Charger:
    """The process's charger (the management API tells its wallet cache about its writes)."""
    charger: Charger = state.extra[CHARGER_KEY]
    return charger


class ChargeStage:
    """Both a stage (reserve) and an after-stage (release); placed before the request-log
    after-stage, which skips the calls whose row the settle already wrote."""

    name = "charge"

    def __init__(self, state: GatewayState) -> None:
        self.charger: Charger = make_charger(state.db, state.settings.welcome_credits)
        state.extra[CHARGER_KEY] = self.charger

    async def on_request(self, ctx: GatewayContext) -> None:
        compiled, target, caller = ctx.compiled, ctx.target, ctx.caller
        assert compiled is not None
        assert target is not None
        assert caller is not None
        assert caller.workspace_id is not None
        assert ctx.connection is not None
        payer, builder = caller.workspace_id, target.workspace_id
        debit, profit, platform = split(compiled.price, compiled.cost, own_app=payer == builder)
        if debit <= 0:
            return
        ctx.charge = await self.charger.reserve(
            ctx.connection,
            caller_workspace_id=payer,
            builder_workspace_id=builder,
            debit=debit,
            profit=profit,
            platform=platform,
            app_id=target.id,
            api=ctx.api,
            request_id=ctx.request_id[:128],
        )
        ctx.settle.append(self._settle)

    async def _settle(self, ctx: GatewayContext) -> None:
        assert ctx.connection is not None
        await self.charger.settle(ctx.connection, ctx.charge, RequestLogStage.row(ctx))
        ctx.log_written = True

    async def after(self, ctx: GatewayContext) -> None:
        charge = ctx.charge
        if charge is None:
            return
        succeeded = ctx.status < 300
        charged = await self.charger.finish(charge, succeeded)
        if succeeded:
            return
        if charged:
            # The charge and its row (a 200: the steps had succeeded) committed before the call
            # failed or was cancelled (its client gone as the commit ran): the call succeeded,
            # as that row says, and the after-stages that follow count it so (no second row).
            ctx.status, ctx.reason = 200, ""
        # Else the row written with the charge rolled back, or was never written: the log
        # stage writes the refusal instead.
        ctx.log_written = charged


class ChargeConfirmStage:
    """Right after the run stage's commit: a charge that could not be written (SQLite: the
    database held less than the process believed) fails the call, whose writes rolled back."""

    name = "charge_confirm"

    def __init__(self, charge: ChargeStage) -> None:
        self.charger = charge.charger

    async def on_request(self, ctx: GatewayContext) -> None:
        if ctx.charge is not None:
            assert ctx.connection is not None
            await self.charger.confirm(ctx.connection, ctx.charge)
