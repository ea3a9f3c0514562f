"""The role rules as pure functions: rank requirements, who may manage whom, what may be granted."""

import pytest

from apiforge.core.errors import ValidationError
from apiforge.workspaces.models import Role, Workspace
from apiforge.workspaces.service import (
    CurrentWorkspace,
    InsufficientRoleError,
    ensure_grantable,
    ensure_outranks,
)

ROLES = list(Role)


def _current(role: Role) -> CurrentWorkspace:
    return CurrentWorkspace(workspace=Workspace(id="w" * 26, name="W"), account_id="a", role=role)


def test_roles_are_ranked_viewer_to_owner() -> None:
    assert [r.value for r in ROLES] == ["viewer", "editor", "admin", "owner"]
    assert [r.rank for r in ROLES] == [0, 1, 2, 3]
    assert Role.ADMIN.at_least(Role.EDITOR)
    assert not Role.EDITOR.at_least(Role.ADMIN)


@pytest.mark.parametrize("actual", ROLES)
@pytest.mark.parametrize("minimum", ROLES)
def test_require_refuses_exactly_the_lower_ranks(actual: Role, minimum: Role) -> None:
    current = _current(actual)
    if actual.rank >= minimum.rank:
        current.require(minimum)
        return
    with pytest.raises(InsufficientRoleError) as caught:
        current.require(minimum)
    assert caught.value.status == 403
    assert caught.value.payload() == {
        "error": "insufficient_role",
        "requiredRole": minimum.value,
        "role": actual.value,
    }
    assert minimum.value in caught.value.message


def test_owner_is_never_grantable() -> None:
    for role in (Role.VIEWER, Role.EDITOR, Role.ADMIN):
        ensure_grantable(role)
    with pytest.raises(ValidationError) as caught:
        ensure_grantable(Role.OWNER)
    assert caught.value.reason == "owner_not_grantable"
    assert caught.value.details["errors"][0]["field"] == "role"


@pytest.mark.parametrize(
    ("actor", "target", "required"),
    [
        (Role.OWNER, Role.ADMIN, None),
        (Role.OWNER, Role.VIEWER, None),
        (Role.ADMIN, Role.EDITOR, None),
        (Role.ADMIN, Role.VIEWER, None),
        (Role.ADMIN, Role.ADMIN, Role.OWNER),
        (Role.ADMIN, Role.OWNER, Role.OWNER),
        (Role.EDITOR, Role.VIEWER, None),
        (Role.EDITOR, Role.EDITOR, Role.ADMIN),
        (Role.VIEWER, Role.VIEWER, Role.EDITOR),
    ],
)
def test_managing_a_member_needs_a_strictly_higher_rank(
    actor: Role, target: Role, required: Role | None
) -> None:
    if required is None:
        ensure_outranks(actor, target)
        return
    with pytest.raises(InsufficientRoleError) as caught:
        ensure_outranks(actor, target)
    assert caught.value.details["requiredRole"] == required.value
