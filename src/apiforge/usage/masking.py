"""What of a call's args may be kept in its request log: `sensitive` params are masked."""

from collections.abc import Mapping, Set
from typing import Any

from apiforge.engine.runtime import MASK  # the one mask, as debug traces show it

__all__ = ["MASK", "mask_args"]


def mask_args(args: Mapping[str, Any], sensitive: Set[str]) -> dict[str, Any]:
    """A copy of `args` with the value of every sensitive param replaced by `***` (given ones
    only: an absent or null param stays so, and the log shows what was sent). A copy even when
    nothing is sensitive, so a later change to the call's args never reaches the queued row."""
    if not sensitive:
        return dict(args)
    return {
        name: MASK if name in sensitive and value is not None else value
        for name, value in args.items()
    }
