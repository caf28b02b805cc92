"""Errors a user can meet, besides those of the space (SpaceError) and the plan (PlanError)."""

from __future__ import annotations

from typing import Any

from .plan import PlanError
from .space import SpaceError

__all__ = ["USER_ERRORS", "MetricNameError", "OptionError", "SearchFailed"]


class OptionError(ValueError):
    """An option value that is not allowed; the message says what was given and what is allowed."""


class MetricNameError(ValueError):
    """Several metrics were reported and ``metric`` does not say which one to optimize."""

    def __init__(self, message: str, names: tuple[str, ...] = ()):
        super().__init__(message)
        self.names = names


class SearchFailed(RuntimeError):  # noqa: N818 - reads as what happened, like TimeoutExpired
    """The search stopped because evaluations kept failing; ``result`` holds what was done."""

    def __init__(self, message: str, result: Any = None):
        super().__init__(message)
        self.result = result


# Mistakes in what the user wrote: the magic shows them as a UsageError, without a traceback.
USER_ERRORS = (SpaceError, PlanError, OptionError, MetricNameError)
