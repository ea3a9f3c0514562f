"""The step engine: compiles API definitions and runs them."""
