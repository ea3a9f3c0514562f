"""Response models of uploaded files (uploads are multipart forms, not JSON models)."""

from apiforge.http.schemas import ApiModel, Timestamp


class FileRead(ApiModel):
    """An uploaded file: `url` downloads its bytes; `name` is the client's file name (bare);
    `md5` is the lowercase hex digest of the stored bytes."""

    id: str
    url: str
    name: str
    size: int
    md5: str
    content_type: str
    created_by: str | None
    created_time: Timestamp
