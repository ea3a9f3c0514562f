"""Static cost: the most RU one call of a step list can consume, within the call's budgets.

The cost is what a call is charged, fixed before it runs, so it must never be below what a call
can consume (the platform would under-charge) and should not be far above it (the builder would
overpay). A call runs at most `RunLimits.max_iterations` loop iterations, all loops together
(its `callApi` callees' too), and at most `RunLimits.max_steps` steps, loop bodies included: a
`forEach` saying 10,000 can never run 10,000 times, and two nested loops share one budget
instead of multiplying theirs.

A step list's bound has three parts: `once`, what its steps cost outside any loop (an `if` its
dearer branch); `loops`, for each loop inside, what one iteration costs beyond its own nested
loops and how many iterations it can run; `dearest`, the most one step run can cost. A call's
consumption is then at most `once` plus the dearest way to spend the iteration budget over the
loops (each iteration of a loop at its `each`, never more than its `most`), and at most
`max_steps * dearest`; the cost is the smaller of the two. Both relax the run's real
constraints (a loop nested in another needs its parent's iterations; both branches of an `if`
count their loops), so neither is ever below what a call consumes.
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
class CostBound:
    once: int = 0
    loops: tuple[Loop, ...] = ()
    dearest: int = 0


@runtime_checkable
class Bounded(Protocol):
    """A container step: its bound depends on its children and on the call's budgets."""

    def bound(self, prices: Mapping[str, int], limits: RunLimits) -> CostBound: ...


def sequence(bounds: Iterable[CostBound]) -> CostBound:
    """Steps that all run: their costs add up; their loops share the call's budget."""
    once, dearest = 0, 0
    loops: list[Loop] = []
    for bound in bounds:
        once += bound.once
        dearest = max(dearest, bound.dearest)
        loops.extend(bound.loops)
    return CostBound(once, tuple(loops), dearest)


def either(price: int, branches: Iterable[CostBound]) -> CostBound:
    """An `if`: its own price and the dearer branch; the loops of every branch may run (in a
    loop, each iteration may take another branch)."""
    chosen = list(branches)
    return CostBound(
        price + max((b.once for b in chosen), default=0),
        tuple(loop for b in chosen for loop in b.loops),
        max([price, *(b.dearest for b in chosen)]),
    )


def repeated(price: int, body: CostBound, max_iterations: int, limits: RunLimits) -> CostBound:
    """A `forEach`: its own price once; its body at most `min(maxIterations, budget)` times; a
    loop nested in the body runs at most its own bound per iteration, and never more than the
    budget in all."""
    budget = limits.max_iterations
    most = min(max_iterations, budget)
    nested = tuple(Loop(loop.each, min(loop.most * most, budget)) for loop in body.loops)
    return CostBound(price, (Loop(body.once, most), *nested), max(price, body.dearest))


def step_bound(step: CompiledStep, prices: Mapping[str, int], limits: RunLimits) -> CostBound:
    """A container's own bound; any other step costs its `cost` each time it runs."""
    if isinstance(step, Bounded):
        return step.bound(prices, limits)
    cost = step.cost(prices)
    return CostBound(cost, (), cost)


def steps_bound(
    steps: Sequence[CompiledStep], prices: Mapping[str, int], limits: RunLimits
) -> CostBound:
    return sequence(step_bound(step, prices, limits) for step in steps)


def total(bound: CostBound, limits: RunLimits) -> int:
    """The most one call consumes: `once` plus the iteration budget spent on the dearest
    iterations first (the best any run can do), and never more than every step the call may
    run at the dearest step's cost."""
    left, looped = limits.max_iterations, 0
    for loop in sorted(bound.loops, key=lambda loop: loop.each, reverse=True):
        if left <= 0 or loop.each <= 0:
            break
        runs = min(loop.most, left)
        looped += runs * loop.each
        left -= runs
    return min(bound.once + looped, limits.max_steps * bound.dearest)


def steps_cost(
    steps: Sequence[CompiledStep], prices: Mapping[str, int], limits: RunLimits = CALL_LIMITS
) -> int:
    """The static cost of a step list run as one call (DESIGN.md §5)."""
    return total(steps_bound(steps, prices, limits), limits)
