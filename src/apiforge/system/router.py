"""HTTP routes of system."""

from fastapi import APIRouter

router = APIRouter(tags=["system"])
