"""The gateway edge: `POST /api/v1/invocations` as a lean pipeline of stages (pure ASGI)."""
