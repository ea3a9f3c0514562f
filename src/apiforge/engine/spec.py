"""Base of every step type's config model: validated on save, compiled once per version."""

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from apiforge.engine.base import CompiledStep


class StepSpec(BaseModel):
    """A step as saved: `id`, `type` and that type's config (camelCase keys, unknown refused)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    type: str

    # Whether the step may only appear at the top level / may contain child steps.
    container: ClassVar[bool] = False

    def children(self) -> list["StepSpec"]:
        """Nested steps (`if`, `forEach`, `transaction`); validated and costed recursively."""
        return []

    def compile(self, compiler: Any) -> CompiledStep:
        """Build the per-version executable; `compiler` is `engine.compiler.Compiler`."""
        raise NotImplementedError(f"step type {self.type} does not compile")
