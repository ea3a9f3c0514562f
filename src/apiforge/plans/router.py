"""HTTP routes of plans."""

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["plans"])
