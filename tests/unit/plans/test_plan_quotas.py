"""Quota arithmetic and plan input rules, without a database."""

from typing import Any

import pytest
from pydantic import ValidationError as PydanticValidationError

from apiforge.plans.models import FREE_PLAN_QUOTAS, QUOTA_NAMES, Plan
from apiforge.plans.schemas import MAX_QUOTA, PlanCreate, PlanUpdate, QuotasInput
from apiforge.plans.service import (
    QuotaExceededError,
    ensure_within_quota,
    full_quotas,
    near_limit,
    quota_limit,
)


def _plan(**quotas: Any) -> Plan:
    return Plan(code="p", name="P", quotas=quotas)


def test_quota_input_fields_are_exactly_the_quota_names() -> None:
    aliases = [field.alias for field in QuotasInput.model_fields.values()]
    assert aliases == list(QUOTA_NAMES)
    assert list(FREE_PLAN_QUOTAS) == list(QUOTA_NAMES)


def test_missing_or_invalid_stored_limits_fall_back_to_the_free_plan() -> None:
    plan = _plan(members=7, apps=True, records="9")
    assert quota_limit(plan, "members") == 7
    assert quota_limit(plan, "apps") == FREE_PLAN_QUOTAS["apps"]
    assert quota_limit(plan, "records") == FREE_PLAN_QUOTAS["records"]
    assert quota_limit(plan, "workspaces") == FREE_PLAN_QUOTAS["workspaces"]
    assert list(full_quotas(plan)) == list(QUOTA_NAMES)


@pytest.mark.parametrize(
    ("limit", "used", "adding", "allowed"),
    [
        (5, 4, 1, True),
        (5, 5, 1, False),
        (5, 3, 2, True),
        (5, 4, 2, False),
        (0, 0, 1, False),
        (-1, 10**12, 1, True),
    ],
)
def test_ensure_within_quota(limit: int, used: int, adding: int, allowed: bool) -> None:
    plan = _plan(members=limit)
    if allowed:
        ensure_within_quota(plan, "members", used, adding)
        return
    with pytest.raises(QuotaExceededError) as caught:
        ensure_within_quota(plan, "members", used, adding)
    assert caught.value.status == 403
    assert caught.value.payload() == {
        "error": "quota_exceeded",
        "quota": "members",
        "limit": limit,
        "used": used,
    }


@pytest.mark.parametrize(
    ("used", "limit", "warning"),
    [
        (0, -1, False),
        (10**15, -1, False),
        (3, 5, False),
        (4, 5, True),
        (6, 5, True),
        (0, 0, True),
        (0, 10, False),
        (8 * 10**15, 10**16, True),
        (8 * 10**15 - 1, 10**16, False),
    ],
)
def test_warning_from_eighty_percent(used: int, limit: int, warning: bool) -> None:
    assert near_limit(used, limit) is warning


@pytest.mark.parametrize("code", ["pro", "a1", "team-2024", "0-x", "a" * 40])
def test_plan_codes_accepted(code: str) -> None:
    assert PlanCreate(code=code, name="P").code == code


@pytest.mark.parametrize("code", ["a", "-a", "Pro", "a_b", "a b", "a" * 41, "é1", ""])
def test_plan_codes_refused(code: str) -> None:
    with pytest.raises(PydanticValidationError):
        PlanCreate(code=code, name="P")


@pytest.mark.parametrize("value", [-2, MAX_QUOTA + 1, True, "5", 1.0, None, [1]])
def test_quota_values_are_strict_integers_from_minus_one(value: Any) -> None:
    with pytest.raises(PydanticValidationError):
        PlanCreate.model_validate({"code": "pro", "name": "P", "quotas": {"apps": value}})


def test_quota_values_keep_their_json_names() -> None:
    body = {"code": "pro", "name": "P", "quotas": {"storageBytes": MAX_QUOTA, "apps": -1}}
    assert PlanCreate.model_validate(body).quotas.given() == {"apps": -1, "storageBytes": MAX_QUOTA}
    assert PlanUpdate.model_validate({}).quotas is None
