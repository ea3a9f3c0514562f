"""Step types, one module per family; each exports `STEPS: dict[str, type[StepSpec]]`."""
