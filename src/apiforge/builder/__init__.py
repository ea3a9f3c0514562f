"""The API builder: apps, their APIs, versions and generated docs."""
