"""Rate-limit response headers: the IETF draft (`RateLimit-Policy`, `RateLimit`, structured
fields), the widespread `X-RateLimit-*` trio, and `Retry-After`.

    RateLimit-Policy: "key";q=50;w=60, "plan";q=600;w=60
    RateLimit: "key";r=0;t=12
    X-RateLimit-Limit: 50, X-RateLimit-Remaining: 0, X-RateLimit-Reset: 12 (seconds from now)
"""

from collections.abc import Sequence

from apiforge.traffic.frequency import Rate

# RFC 8941 Integers have at most 15 digits: a strict client's parser rejects the whole field
# over a longer one. A larger value (a plan's near-unlimited rate, 2**53 - 1 at most) is shown
# as the largest Integer there is: no client gets anywhere near either in a window.
SF_INTEGER_MAX = 999_999_999_999_999

_policies: dict[tuple[tuple[str, int, int], ...], str] = {}


def policy(rates: Sequence[Rate]) -> str:
    """`RateLimit-Policy` for the rates a call was counted in (strings cached per shape)."""
    shape = tuple((rate.scope, rate.limit, rate.window) for rate in rates)
    text = _policies.get(shape)
    if text is None:
        text = ", ".join(
            f'"{scope}";q={_sf(limit)};w={_sf(window)}' for scope, limit, window in shape
        )
        if len(_policies) < 4096:
            _policies[shape] = text
    return text


def exceeded_headers(rates: Sequence[Rate], rate: Rate, retry_after: int) -> dict[str, str]:
    """Every header of a 429 from a frequency limit: the refusing policy has 0 remaining."""
    seconds = str(retry_after)
    return {
        "Retry-After": seconds,
        "RateLimit-Policy": policy(rates),
        "RateLimit": f'"{rate.scope}";r=0;t={_sf(retry_after)}',
        "X-RateLimit-Limit": str(rate.limit),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": seconds,
    }


def _sf(value: int) -> int:
    """`value` as a structured-field Integer (`SF_INTEGER_MAX` at most)."""
    return min(value, SF_INTEGER_MAX)
