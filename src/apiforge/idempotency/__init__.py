"""Idempotency (spec 003 §4): keys, anti-duplicate tokens, sequence numbers, optimistic locking."""
