"""Request and response models of workspaces, their members and ownership transfer."""

from typing import Annotated

from pydantic import EmailStr, Field

from apiforge.http.schemas import ApiModel, Flag, InputModel, Text, Timestamp
from apiforge.workspaces.models import Role

WorkspaceName = Annotated[Text, Field(min_length=1, max_length=100)]


class WorkspaceCreate(InputModel):
    name: WorkspaceName


class WorkspaceUpdate(InputModel):
    name: WorkspaceName


class WorkspaceRead(ApiModel):
    """A workspace as one member sees it: `role` is the caller's own role there."""

    id: str
    name: str
    personal: Flag
    owner_id: str
    plan_id: str
    role: Role
    member_count: int
    version: int
    created_time: Timestamp
    updated_time: Timestamp


class MemberCreate(InputModel):
    """Add an existing account; `owner` is refused (ownership moves only by transfer)."""

    email: EmailStr = Field(max_length=254)
    role: Role


class MemberUpdate(InputModel):
    role: Role


class MemberRead(ApiModel):
    account_id: str
    email: str
    name: str
    role: Role
    version: int
    created_time: Timestamp


class OwnershipTransfer(InputModel):
    account_id: str = Field(min_length=1, max_length=64)
