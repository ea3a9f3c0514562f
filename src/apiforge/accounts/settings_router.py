"""HTTP routes of `/api/v1/user/settings`."""

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["user settings"])
