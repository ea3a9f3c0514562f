"""API keys (app-, pk-, ws-) and subscriptions: who may call which app."""
