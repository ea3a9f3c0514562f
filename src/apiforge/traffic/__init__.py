"""Traffic control: concurrency and frequency limits, shared through Redis or kept in-process."""
