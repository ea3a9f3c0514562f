"""HTTP routes of workspaces."""

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["workspaces"])
