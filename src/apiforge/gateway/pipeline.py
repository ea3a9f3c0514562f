"""The gateway's stages in order, read top to bottom, each with the reason for its place."""

from apiforge.gateway.keys import ApiKeyResolver, PublishableKeyStage, SubscriptionCache
from apiforge.gateway.signing import SignatureResolver
from apiforge.gateway.stage import AfterStage, GatewayState, Stage
from apiforge.gateway.stages.auth import AuthStage, ConsoleTokenResolver
from apiforge.gateway.stages.charge import ChargeConfirmStage, ChargeStage
from apiforge.gateway.stages.idempotency import (
    IdempotencyReleaseStage,
    IdempotencyStage,
    idempotency_store,
)
from apiforge.gateway.stages.log import RequestLogStage
from apiforge.gateway.stages.permissions import PermissionStage
from apiforge.gateway.stages.policy import PolicyStage
from apiforge.gateway.stages.quotas import QuotaStage
from apiforge.gateway.stages.request import RequestStage
from apiforge.gateway.stages.resolve import ResolveStage
from apiforge.gateway.stages.run import RunStage
from apiforge.gateway.stages.traffic import TrafficRelease, TrafficStage
from apiforge.gateway.stages.validation import ValidationStage
from apiforge.traffic.control import TrafficControl


def build_stages(state: GatewayState) -> tuple[tuple[Stage, ...], tuple[AfterStage, ...]]:
    loader = state.engine.loader
    traffic: TrafficControl = state.extra["traffic"]
    quotas = QuotaStage(state)  # checks before the run, counts successes after it
    charge = ChargeStage(state)  # reserves before the run, releases after a failed call
    answers = idempotency_store(state).log
    if answers is not None:  # SQLite: answers a charge carries are written as it commits
        charge.charger.add_commit_hooks(answers)
    stages: tuple[Stage, ...] = (
        # 1. Parse the body first: nothing else can be known without appId/api/version.
        RequestStage(),
        # 2. Identify the caller before any lookup, so anonymous traffic costs nothing more.
        #    Keys first, then signatures; a console token only when neither is present.
        AuthStage((ApiKeyResolver(state), SignatureResolver(state), ConsoleTokenResolver(state))),
        # 3. Find the app and version (one indexed query; published plans are cached).
        ResolveStage(loader),
        # 4. Access: membership, or key binding + subscription; then the plan, API enabled.
        PolicyStage(loader, SubscriptionCache(state)),
        # 4b. A publishable key only reaches token-requiring or public APIs (needs the plan).
        PublishableKeyStage(),
        # 5. Traffic control once the app, API and calling workspace are known: frequency and
        #    concurrency limits admitted at once (one Redis round trip), places held to the end.
        TrafficStage(traffic, quotas.meter),
        # 6. Validate args only for callers allowed to call: errors never leak param lists.
        ValidationStage(),
        # 7. End-user token and permission mode, on validated args (userSystem reads an arg).
        PermissionStage(state),
        # 8. Idempotency once the caller and its end user may make this call (DESIGN.md puts
        #    it before 7 and 8: a replay would then answer a caller without its end user's
        #    token, or another end user of a shared browser key; docs/decisions.md), after
        #    the traffic stages (shed load never claims a key); refusals after it release.
        IdempotencyStage(state),
        # 9. Plan quotas (callsPerMonth) from in-process counters: no round trip per call.
        quotas,
        # 9b. Balance >= price: the price is reserved before any step runs (402), charged in
        #     the run's own transaction (11), released when the call fails.
        charge,
        # 10. Run the steps and commit the call's transaction.
        RunStage(state.engine),
        # 11. The charge committed with the steps (else the call fails, nothing kept). Last:
        #     on SQLite it may hand the call's connection back to the pool to get there.
        ChargeConfirmStage(charge),
    )
    # 11. Every call, refused or not, leaves a request log line (buffered, never a round trip).
    # An unfinished idempotency claim is freed for a retry (only when a call carried a key).
    # Concurrency places are given back first, before anything else can delay them.
    after: tuple[AfterStage, ...] = (
        TrafficRelease(traffic),
        IdempotencyReleaseStage(state),
        charge,
        RequestLogStage(state),
        quotas,
    )
    return stages, after
