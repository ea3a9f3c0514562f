"""Step family: http."""

from apiforge.engine.spec import StepSpec

STEPS: dict[str, type[StepSpec]] = {}
