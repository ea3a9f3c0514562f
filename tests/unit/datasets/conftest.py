"""Fixtures of the datasets unit tests (defined in `_support`, shared with the data-step tests)."""

from tests.unit.datasets._support import connection, store, tenants

__all__ = ["connection", "store", "tenants"]
