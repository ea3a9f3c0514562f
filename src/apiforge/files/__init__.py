"""Uploaded files: metadata rows, bytes on local disk, and the `uploadsPerMonth` quota."""
