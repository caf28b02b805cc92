"""hbmagic: Hyperband hyperparameter search in a notebook cell."""

from .errors import MetricNameError, OptionError, SearchFailed
from .events import EndReason, EvalStatus, Event, EventBus
from .plan import Plan, PlanError, make_plan
from .result import Best, Result, TrialRecord, TrialStatus
from .space import (
    Space,
    SpaceError,
    choice,
    lograndint,
    loguniform,
    quniform,
    randint,
    uniform,
)
from .trial import Stopped, Trial
from .tune import tune

__version__ = "0.1.0"

__all__ = [
    "Best",
    "EndReason",
    "EvalStatus",
    "Event",
    "EventBus",
    "MetricNameError",
    "OptionError",
    "Plan",
    "PlanError",
    "Result",
    "SearchFailed",
    "Space",
    "SpaceError",
    "Stopped",
    "Trial",
    "TrialRecord",
    "TrialStatus",
    "choice",
    "lograndint",
    "loguniform",
    "make_plan",
    "quniform",
    "randint",
    "tune",
    "uniform",
]


def __getattr__(name: str):
    # `%load_ext hbmagic` finds these; imported lazily so that `import hbmagic` does not load IPython's magics.
    if name in ("load_ipython_extension", "unload_ipython_extension"):
        from . import magic

        return getattr(magic, name)
    raise AttributeError(f"module 'hbmagic' has no attribute {name!r}")
