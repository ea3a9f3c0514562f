"""apiforge: a self-hosted open API platform."""

__version__ = "0.1.0"
