"""The se_viz version (one place; se_viz.__version__ re-exports it)."""

__version__ = "0.2.0"
