"""Collections (datasets) and their records, partitioned by calling workspace."""
