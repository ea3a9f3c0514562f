"""Request logs and usage counters."""
