"""Errors a user can act on: each names the file, the key and what is allowed."""
from __future__ import annotations

from collections.abc import Iterable


class ReprozooError(Exception):
    """Base class for errors reported to the user without a traceback."""


class ConfigError(ReprozooError):
    """A recipe, claim or params file is invalid."""

    def __init__(self, file, key: str | None, problem: str, allowed: Iterable | None = None):
        # a file name may hold a newline or other control characters: the error stays one line
        self.file = str(file).encode("unicode_escape").decode() if not str(file).isprintable() else str(file)
        self.key, self.problem = key, problem
        self.allowed = sorted(str(a) for a in allowed) if allowed is not None else None
        where = f"{self.file}: key '{key}'" if key else self.file
        msg = f"{where}: {problem}"
        if self.allowed is not None:
            msg += f" (allowed: {', '.join(self.allowed) or 'none'})"
        super().__init__(msg)


class RunError(ReprozooError):
    """A run cannot start or its results would clobber other results."""


class NonFiniteStep(ReprozooError):
    """A training step whose loss or gradients are NaN/Inf; it was not applied."""
