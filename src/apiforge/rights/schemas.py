"""Request and response models of `/api/v1/apps/{appId}/user-rights`."""

from typing import Annotated

from pydantic import Field

from apiforge.http.schemas import ApiModel, InputModel, Text, Timestamp

MAX_ID_LENGTH = 128  # the user_rights key columns
MAX_RIGHTS = 100  # per (user, target), as the `userRight` step allows

UserId = Annotated[Text, Field(min_length=1, max_length=MAX_ID_LENGTH)]
Target = Annotated[Text, Field(max_length=MAX_ID_LENGTH)]
Right = Annotated[Text, Field(min_length=1, max_length=MAX_ID_LENGTH)]


class UserRightGrant(InputModel):
    """Add `rights` to what `userId` holds on `target` (`""`: the app as a whole)."""

    user_id: UserId
    target: Target = ""
    rights: Annotated[list[Right], Field(min_length=1, max_length=MAX_RIGHTS)]


class UserRightHeld(ApiModel):
    """What a user holds on one target after a grant or a revoke."""

    user_id: str
    target: str
    rights: list[str]


class UserRightRead(UserRightHeld):
    updated_time: Timestamp
