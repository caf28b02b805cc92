"""The options of a search, validated in one place.

Names match the magic's options (``max_budget`` for ``--max-budget``), as
DESIGN.md fixes them. Messages say what was given and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from .errors import OptionError
from .plan import Plan, make_plan

__all__ = ["PLAN_OPTIONS", "Options"]

# The options that change the plan or the metric, so belong in the study key.
PLAN_OPTIONS = (
    "max_budget",
    "min_budget",
    "eta",
    "algorithm",
    "convention",
    "brackets",
    "total_budget",
    "n_configs",
    "max_trials",
    "metric",
    "mode",
)


@dataclass
class Options:
    max_budget: int | float | None = None
    min_budget: int | float = 1
    eta: int | None = None
    algorithm: str = "hyperband"
    convention: str = "alg1"
    brackets: int | None = None
    total_budget: int | float | None = None
    n_configs: int | None = None
    iterations: int = 1
    max_trials: int | None = None
    time_limit: float | None = None
    metric: str | None = None
    mode: str = "min"
    seed: int | None = None
    executor: Any = None
    workers: int | None = None
    devices: Any = None
    trials_per_device: int = 1
    cluster: str | None = None
    offload: bool = False
    storage: Any = None
    study: str | None = None
    new: bool = False
    max_failures: int | None = None
    trial_timeout: float | None = None

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        _positive_int(self, "iterations")
        for name in ("max_trials", "max_failures", "workers", "n_configs", "brackets"):
            if getattr(self, name) is not None:
                _positive_int(self, name)
        _positive_int(self, "trials_per_device")
        for name in ("time_limit", "trial_timeout"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (value > 0 and math.isfinite(value))
            ):
                raise OptionError(f"The value of `{name}` is {value!r}, but must be a number of seconds > 0")
        if self.mode not in ("min", "max"):
            raise OptionError(f"The value of `mode` is {self.mode!r}, but must be 'min' or 'max'")
        if self.metric is not None and (not isinstance(self.metric, str) or not self.metric):
            raise OptionError(
                f"The value of `metric` is {self.metric!r}, but must be a metric name such as 'val_error'"
            )
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise OptionError(f"The value of `seed` is {self.seed!r}, but must be an integer")
        if self.algorithm == "asha" and self.max_trials is None and self.time_limit is None:
            raise OptionError("asha needs a stopping rule: give `max_trials` or `time_limit` (or both)")
        if self.study is not None and (not isinstance(self.study, str) or not _is_name(self.study)):
            raise OptionError(
                f"The value of `study` is {self.study!r}, but must be a name of letters, digits, '-', '_' and '.'"
            )
        self.plan()  # budgets, eta, convention and brackets

    def plan(self) -> Plan:
        return make_plan(
            max_budget=self.max_budget,
            min_budget=self.min_budget,
            eta=self.eta,
            algorithm=self.algorithm,
            convention=self.convention,
            brackets=self.brackets,
            total_budget=self.total_budget,
            n_configs=self.n_configs,
            iterations=self.iterations,
            max_trials=self.max_trials,
        )

    def key_part(self) -> dict[str, Any]:
        """What of these options enters the study key."""
        return {name: getattr(self, name) for name in PLAN_OPTIONS}

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def _positive_int(options: Options, name: str) -> None:
    value = getattr(options, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"The value of `{name}` is {value!r}, but must be an integer >= 1")


def _is_name(text: str) -> bool:
    return bool(text) and text not in (".", "..") and all(c.isalnum() or c in "-_." for c in text)
