"""Making what is on the disk stay there."""

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory (so a rename, an unlink or a new entry in it is durable),
    by its path."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
