"""Every table: importing this module registers all domain models on `Base.metadata`."""

from apiforge.accounts import models as accounts
from apiforge.builder import models as builder
from apiforge.core.db import Base
from apiforge.datasets import models as datasets
from apiforge.plans import models as plans
from apiforge.workspaces import models as workspaces

metadata = Base.metadata

__all__ = ["accounts", "builder", "datasets", "metadata", "plans", "workspaces"]
