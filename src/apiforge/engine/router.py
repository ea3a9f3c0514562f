"""HTTP routes of engine."""

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["engine"])
