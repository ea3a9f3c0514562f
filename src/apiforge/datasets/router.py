"""HTTP routes of datasets."""

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["datasets"])
