"""HTTP routes of builder."""

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["builder"])
