"""The package's user errors: one base class the CLI reports as one line with exit code 2.

Every error that means "the user asked for something this package cannot do" (a bad flag or
config value, a missing dataset, a run directory that cannot be used, a checkpoint that does not
fit) derives from `UserError`; its message is one line that names the problem and what to do.
Anything else (TensorFlow's own errors, Keras' argument checks, bugs) is not a user error: the CLI
exits 1 and keeps the traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A user-facing mistake or missing resource; the message says what to do instead."""


class ConfigError(UserError):
    """An invalid configuration value or combination of values."""


class DataError(UserError):
    """A user-facing data problem; the message is one line saying what to do."""
