"""Static cost: the most RU one call of a step list can consume, within the call's budgets.

The cost is what a call is charged, fixed before it runs, so it must never be below what a call
can consume (the platform would under-charge) and should not be far above it (the builder would
overpay). A call runs at most `RunLimits.max_iterations` loop iterations, all loops together
(its `callApi` callees' too), and at most `RunLimits.max_steps` steps, loop bodies and callees
included: a `forEach` saying 10,000 can never run 10,000 times, two nested loops share one
budget instead of multiplying theirs, and a callee run from a loop shares the budgets with
every other run of it.

A step list's bound has three parts: `once`, what its steps cost outside any loop (an `if` its
dearer branch); `loops`, for each loop inside, what one iteration costs beyond its own nested
loops and how many iterations it can run; `runs`, for each step, its own price and how often
one call can run it. A call's consumption is then at most `once` plus the dearest way to spend
the iteration budget over the loops (each iteration of a loop at its `each`, never more than its
`most`), and at most the dearest way to spend the step budget over the steps (each run at its
price, never more than its `most`); the cost is the smaller of the two. Both relax the run's
real constraints (a loop nested in another needs its parent's iterations; both branches of an
`if` count), so neither is ever below what a call consumes.

A `callApi` callee of the same version is part of its caller's bound (`called`): its steps and
loops draw on the caller's budgets like the caller's own. Counting it as one step costing its
whole cost (what a call of it alone may consume) once per caller iteration charged a loop of
calls hundreds of times what a call could run. A callee pinned to another version is known only
by the cost it was published with (`opaque`): one step of that cost per run of the `callApi`.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from apiforge.engine.base import CALL_LIMITS, CompiledStep, RunLimits


@dataclass(frozen=True, slots=True)
class Loop:
    each: int  # the most one iteration of the body costs, its nested loops' iterations aside
    most: int  # the most iterations it can run in one call, however often the loop is entered


@dataclass(frozen=True, slots=True)
class Run:
    price: int  # what one run of a step costs (a `callApi` its own price, not its callee's)
    most: int  # the most times one call can run it


@dataclass(frozen=True, slots=True)
class CostBound:
    once: int = 0
    loops: tuple[Loop, ...] = ()
    runs: tuple[Run, ...] = ()


@runtime_checkable
class Bounded(Protocol):
    """A container step: its bound depends on its children and on the call's budgets."""

    def bound(self, prices: Mapping[str, int], limits: RunLimits) -> CostBound: ...


def single(price: int) -> CostBound:
    """A step that runs once each time its list runs, at `price`."""
    return CostBound(price, (), (Run(price, 1),) if price > 0 else ())


def _dearest_first(items: Iterable[tuple[int, int]], budget: int) -> list[tuple[int, int]]:
    """(price, most) pairs merged by price, dearest first, cut where the dearer ones already
    fill `budget`: `total` never reaches the rest, nor after any combination (merging with other
    bounds only adds items, a loop around them only raises every `most`). This keeps a bound
    at most `budget` items long however many callees and steps it inlines."""
    merged: dict[int, int] = {}
    for price, most in items:
        if price > 0:
            merged[price] = min(merged.get(price, 0) + most, budget)
    kept: list[tuple[int, int]] = []
    filled = 0
    for price in sorted(merged, reverse=True):
        kept.append((price, merged[price]))
        filled += merged[price]
        if filled >= budget:
            break
    return kept


def _compact(once: int, loops: Iterable[Loop], runs: Iterable[Run], limits: RunLimits) -> CostBound:
    kept_loops = _dearest_first(((loop.each, loop.most) for loop in loops), limits.max_iterations)
    kept_runs = _dearest_first(((run.price, run.most) for run in runs), limits.max_steps)
    return CostBound(
        once,
        tuple(Loop(each, most) for each, most in kept_loops),
        tuple(Run(price, most) for price, most in kept_runs),
    )


def sequence(bounds: Iterable[CostBound], limits: RunLimits = CALL_LIMITS) -> CostBound:
    """Steps that all run: their costs add up; their loops and steps share the call's budgets."""
    once = 0
    loops: list[Loop] = []
    runs: list[Run] = []
    for bound in bounds:
        once += bound.once
        loops.extend(bound.loops)
        runs.extend(bound.runs)
    return _compact(once, loops, runs, limits)


def either(price: int, branches: Iterable[CostBound], limits: RunLimits = CALL_LIMITS) -> CostBound:
    """An `if`: its own price and the dearer branch; the loops and steps of every branch may
    run (in a loop, each iteration may take another branch)."""
    chosen = list(branches)
    own = single(price)
    return _compact(
        price + max((b.once for b in chosen), default=0),
        (loop for b in chosen for loop in b.loops),
        (*own.runs, *(run for b in chosen for run in b.runs)),
        limits,
    )


def repeated(price: int, body: CostBound, max_iterations: int, limits: RunLimits) -> CostBound:
    """A `forEach`: its own price once; its body at most `min(maxIterations, budget)` times; a
    loop nested in the body runs at most its own bound per iteration, and never more than the
    budget in all; so does each step of the body (one run per iteration of its loop)."""
    budget = limits.max_iterations
    most = min(max_iterations, budget)
    nested = (Loop(loop.each, min(loop.most * most, budget)) for loop in body.loops)
    runs = (Run(run.price, min(run.most * most, budget)) for run in body.runs)
    own = single(price)
    return _compact(price, (Loop(body.once, most), *nested), (*own.runs, *runs), limits)


def called(price: int, callee: CostBound, limits: RunLimits = CALL_LIMITS) -> CostBound:
    """A `callApi` step: its own price, then its callee's steps and loops, which share the
    caller's budgets as if they were written in its place."""
    return sequence((single(price), callee), limits)


def opaque(cost: int) -> CostBound:
    """A callee known only by its cost (one pinned to another published version): counted as
    one more step of that cost each time the `callApi` runs. Sound for the step budget too: a
    callee that consumes anything runs at least one step of the caller's budget."""
    return single(cost)


def step_bound(step: CompiledStep, prices: Mapping[str, int], limits: RunLimits) -> CostBound:
    """A container's own bound; any other step costs its `cost` each time it runs."""
    if isinstance(step, Bounded):
        return step.bound(prices, limits)
    return single(step.cost(prices))


def steps_bound(
    steps: Sequence[CompiledStep], prices: Mapping[str, int], limits: RunLimits
) -> CostBound:
    return sequence((step_bound(step, prices, limits) for step in steps), limits)


def _spend(items: Iterable[tuple[int, int]], budget: int) -> int:
    """The most `budget` units buy when each item costs `price` per unit, `most` units at most:
    the dearest first (the best any run can do)."""
    left, spent = budget, 0
    for price, most in sorted(items, reverse=True):
        if left <= 0 or price <= 0:
            break
        units = min(most, left)
        spent += units * price
        left -= units
    return spent


def total(bound: CostBound, limits: RunLimits) -> int:
    """The most one call consumes: `once` plus the iteration budget spent on the dearest
    iterations first, and never more than the step budget spent on the dearest step runs."""
    looped = _spend(((loop.each, loop.most) for loop in bound.loops), limits.max_iterations)
    stepped = _spend(((run.price, run.most) for run in bound.runs), limits.max_steps)
    return min(bound.once + looped, stepped)


def steps_cost(
    steps: Sequence[CompiledStep], prices: Mapping[str, int], limits: RunLimits = CALL_LIMITS
) -> int:
    """The static cost of a step list run as one call (DESIGN.md §5)."""
    return total(steps_bound(steps, prices, limits), limits)
