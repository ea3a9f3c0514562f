"""Every table: importing this module registers all domain models on `Base.metadata`."""

from apiforge.accounts import models as accounts
from apiforge.billing import models as billing
from apiforge.builder import models as builder
from apiforge.core.db import Base
from apiforge.datasets import models as datasets
from apiforge.files import models as files
from apiforge.idempotency import models as idempotency
from apiforge.keys import models as keys
from apiforge.plans import models as plans
from apiforge.traffic import models as traffic
from apiforge.usage import models as usage
from apiforge.workspaces import models as workspaces

metadata = Base.metadata

__all__ = [
    "accounts",
    "billing",
    "builder",
    "datasets",
    "files",
    "idempotency",
    "keys",
    "metadata",
    "plans",
    "traffic",
    "usage",
    "workspaces",
]
