"""The package version: a module of its own, so that code deep in the layers can name it without
importing the package root (whose lazy exports reach every layer)."""

__version__ = "0.1.0"
