"""The package's version, in a module of its own so that any module can record it (exports,
evaluations, imported runs) without importing the package root, which is the public API on top
of everything."""

__version__ = "0.1.0"
