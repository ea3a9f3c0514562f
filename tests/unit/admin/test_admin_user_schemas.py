"""The admin user schemas: status is the only writable field, and reads follow the conventions."""

from datetime import UTC, datetime

import pydantic
import pytest

from apiforge.accounts.models import Account
from apiforge.admin.schemas import AccountStatus, AdminUserRead, AdminUserUpdate
from apiforge.core.errors import ValidationError


def test_status_is_accepted() -> None:
    assert AdminUserUpdate.model_validate({"status": "disabled"}).status is AccountStatus.DISABLED
    assert AdminUserUpdate.model_validate({"status": "active"}).status is AccountStatus.ACTIVE


def test_any_other_field_is_refused_by_name_even_beside_a_valid_status() -> None:
    with pytest.raises(ValidationError) as caught:
        AdminUserUpdate.model_validate({"status": "active", "password": "x", "email": "y"})
    assert caught.value.status == 400
    assert caught.value.reason == "admin_cannot_edit_user_data"
    assert caught.value.details["errors"] == [
        {"field": "email", "message": "cannot be changed by an administrator"},
        {"field": "password", "message": "cannot be changed by an administrator"},
    ]


@pytest.mark.parametrize("body", [{"status": "banned"}, {"status": None}, {}, ["status"], "x"])
def test_invalid_status_shapes_fail_ordinary_validation(body: object) -> None:
    with pytest.raises(pydantic.ValidationError):
        AdminUserUpdate.model_validate(body)


def test_read_renders_flags_times_and_a_missing_login() -> None:
    account = Account(
        id="01aaaaaaaaaaaaaaaaaaaaaaaa",
        email="a@example.com",
        name="A",
        status="active",
        is_admin=True,
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC),
        last_login_at=None,
        password_hash="secret-hash",
        version=3,
    )
    rendered = AdminUserRead.model_validate(account).model_dump(by_alias=True)
    assert rendered == {
        "id": "01aaaaaaaaaaaaaaaaaaaaaaaa",
        "email": "a@example.com",
        "name": "A",
        "status": "active",
        "isAdmin": 1,
        "version": 3,
        "createdTime": "2026-01-02T03:04:05Z",
        "lastLoginTime": None,
    }
