"""Step family: data."""

from apiforge.engine.spec import StepSpec

STEPS: dict[str, type[StepSpec]] = {}
