"""Rate-limit response headers: the IETF draft (`RateLimit-Policy`, `RateLimit`, structured
fields), the widespread `X-RateLimit-*` trio, and `Retry-After`.

    RateLimit-Policy: "key";q=50;w=60, "plan";q=600;w=60
    RateLimit: "key";r=0;t=12
    X-RateLimit-Limit: 50, X-RateLimit-Remaining: 0, X-RateLimit-Reset: 12 (seconds from now)
"""

from collections.abc import Sequence

from apiforge.traffic.frequency import Rate

_policies: dict[tuple[tuple[str, int, int], ...], str] = {}


def policy(rates: Sequence[Rate]) -> str:
    """`RateLimit-Policy` for the rates a call was counted in (strings cached per shape)."""
    shape = tuple((rate.scope, rate.limit, rate.window) for rate in rates)
    text = _policies.get(shape)
    if text is None:
        text = ", ".join(f'"{scope}";q={limit};w={window}' for scope, limit, window in shape)
        if len(_policies) < 4096:
            _policies[shape] = text
    return text


def exceeded_headers(rates: Sequence[Rate], rate: Rate, retry_after: int) -> dict[str, str]:
    """Every header of a 429 from a frequency limit: the refusing policy has 0 remaining."""
    seconds = str(retry_after)
    return {
        "Retry-After": seconds,
        "RateLimit-Policy": policy(rates),
        "RateLimit": f'"{rate.scope}";r=0;t={seconds}',
        "X-RateLimit-Limit": str(rate.limit),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": seconds,
    }
