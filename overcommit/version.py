"""The package version (pyproject.toml's), importable from any layer without the package's API."""

__version__ = "0.1.0"
