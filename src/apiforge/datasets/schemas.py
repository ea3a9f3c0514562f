"""Request and response models of collections ("datasets"); records are free-form JSON objects."""

from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue

from apiforge.datasets.schema import MAX_FIELDS, NAME_PATTERN
from apiforge.http.schemas import ApiModel, Flag, InputModel, Text, Timestamp

# Same list as `schema.FIELD_TYPES` (a unit test keeps them equal).
FieldType = Literal["string", "integer", "number", "boolean", "object", "array", "datetime"]

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
Description = Annotated[Text, Field(max_length=2000)]


class FieldDef(InputModel):
    """One typed field. `unique` is per workspace partition; `encrypted` values are stored
    encrypted, returned in clear to those who may read the record, and never filterable."""

    name: Name
    type: FieldType
    required: Flag = False
    unique: Flag = False
    indexed: Flag = False
    encrypted: Flag = False
    default: JsonValue = None


class DatasetCreate(InputModel):
    app_id: str = Field(min_length=1, max_length=64)
    name: Name
    description: Description = ""
    fields: list[FieldDef] = Field(default_factory=list, max_length=MAX_FIELDS)


class DatasetUpdate(InputModel):
    """A full replacement of the definition (PUT); the owning app never changes."""

    name: Name
    description: Description = ""
    fields: list[FieldDef] = Field(max_length=MAX_FIELDS)


class FieldRead(ApiModel):
    name: str
    type: str
    required: Flag
    unique: Flag
    indexed: Flag
    encrypted: Flag
    default: Any = None


class DatasetRead(ApiModel):
    id: str
    app_id: str
    name: str
    description: str
    fields: list[FieldRead]
    version: int
    created_time: Timestamp
    updated_time: Timestamp


# A record as the API shows it: `id`, every field, `version`, `createdTime`, `updatedTime`.
RecordRead = dict[str, Any]
