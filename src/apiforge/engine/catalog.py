"""Every step type by name: the union of the step families' registries."""

from apiforge.engine.spec import StepSpec
from apiforge.engine.steps import auth, call, control, data, http

STEP_TYPES: dict[str, type[StepSpec]] = {
    **control.STEPS,
    **data.STEPS,
    **auth.STEPS,
    **http.STEPS,
    **call.STEPS,
}
