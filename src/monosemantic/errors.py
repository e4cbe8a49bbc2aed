"""User-facing errors.

Every error a user can cause by bad input is a :class:`MonosemanticError` whose message is one
line saying what was wrong, what was expected and, where it helps, what to try. The CLI prints
that line and exits with status 2 instead of a traceback.
"""


class MonosemanticError(ValueError):
    """Bad input or an unusable resource, explained in one line."""


class StoreError(MonosemanticError):
    """An activation store that is missing, corrupt, or made with other settings."""
