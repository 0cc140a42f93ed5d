"""The package version, in a module of its own so that any module can ask for it without importing
the package's public API (and, through it, everything else)."""

__version__ = "0.1.0"
