"""The one stream of events a search emits, and the bus observers subscribe to.

Every change of a search is one of these frozen dataclasses. The journal, the
widget, the text progress and the Result all consume the same stream; resuming
a study is replaying its journal. ``at`` is the wall-clock time of emission,
stamped by the runner (the scheduler, which has no clock, leaves it 0).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .plan import Plan

__all__ = [
    "BracketDone",
    "EndReason",
    "EvalStatus",
    "EvaluationEnded",
    "EvaluationStarted",
    "Event",
    "EventBus",
    "Observer",
    "Reported",
    "RungDone",
    "SlotAdded",
    "StudyEnded",
    "StudyStarted",
    "TrialCreated",
    "TrialPromoted",
    "TrialStopped",
    "event_from_dict",
    "event_to_dict",
]


class EvalStatus(str, Enum):
    """How an evaluation ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # stopped by Stop, an interrupt or a time limit: it reruns on resume


class EndReason(str, Enum):
    """Why a search ended."""

    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    TIME_LIMIT = "time limit"
    MAX_TRIALS = "max trials"
    MAX_FAILURES = "max failures"
    ALL_FAILING = "all failing"
    ERROR = "error"


@dataclass(frozen=True)
class Event:
    at: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True)
class StudyStarted(Event):
    study: str
    plan: Plan
    space: dict[str, str]
    metric: str | None
    mode: str
    seed: int
    slots: tuple[str, ...]
    reused: int = 0  # evaluations taken from the journal
    resumed: bool = False


@dataclass(frozen=True)
class TrialCreated(Event):
    trial: int
    iteration: int
    bracket: int
    config: dict[str, Any]
    seed: int


@dataclass(frozen=True)
class SlotAdded(Event):
    """A slot the executor gained while the search ran (a Dask worker that joined): one more lane."""

    slot: int
    device: str
    label: str


@dataclass(frozen=True)
class EvaluationStarted(Event):
    trial: int
    rung: int
    budget: float
    start: float
    slot: int
    device: str


@dataclass(frozen=True)
class Reported(Event):
    trial: int
    rung: int
    step: float
    metrics: dict[str, float]


@dataclass(frozen=True)
class EvaluationEnded(Event):
    trial: int
    rung: int
    budget: float
    status: EvalStatus
    value: float | None = None  # the optimized metric; None unless completed
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    output: str = ""
    duration: float = 0.0
    trained: float = 0.0  # budget - start: resource this evaluation trained
    state_saved: bool = False


@dataclass(frozen=True)
class TrialPromoted(Event):
    trial: int
    rung: int  # the rung it is promoted to
    budget: float
    rank: int


@dataclass(frozen=True)
class TrialStopped(Event):
    trial: int
    rung: int  # the rung whose cutoff it missed
    value: float | None
    rank: int  # 1-based among the rung's results, best first (when it was stopped)
    of: int  # results in the rung (when it was stopped)
    # The worst promoted value (None when none was promoted); for a trial ASHA stops before its
    # rung is complete, the worst value still placed to be promoted.
    cutoff: float | None


@dataclass(frozen=True)
class RungDone(Event):
    iteration: int
    bracket: int
    rung: int
    promoted: tuple[int, ...]
    cutoff: float | None


@dataclass(frozen=True)
class BracketDone(Event):
    iteration: int
    bracket: int
    best: int | None
    value: float | None


@dataclass(frozen=True)
class StudyEnded(Event):
    reason: EndReason
    message: str = ""


_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        StudyStarted,
        SlotAdded,
        TrialCreated,
        EvaluationStarted,
        Reported,
        EvaluationEnded,
        TrialPromoted,
        TrialStopped,
        RungDone,
        BracketDone,
        StudyEnded,
    )
}


_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _TYPES.values()}


def event_to_dict(event: Event) -> dict[str, Any]:
    """A dict of ``event`` for ``json.dumps`` (NaN and infinities as Python's json writes them)."""
    data: dict[str, Any] = {"type": type(event).__name__}
    for name in _FIELDS[type(event)]:
        value = getattr(event, name)
        if isinstance(value, Enum):
            value = value.value
        elif isinstance(value, Plan):
            value = value.to_dict()
        data[name] = value
    return data


def event_from_dict(data: dict[str, Any]) -> Event:
    """The event that ``event_to_dict`` turned into ``data``."""
    data = dict(data)
    cls = _TYPES[data.pop("type")]
    kwargs: dict[str, Any] = {}
    for name in _FIELDS[cls]:
        if name not in data:
            continue
        value = data[name]
        if name == "plan":
            value = Plan.from_dict(value)
        elif name == "status":
            value = EvalStatus(value)
        elif name == "reason":
            value = EndReason(value)
        elif name in ("slots", "promoted"):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


Observer = Callable[[Event], Any]


class EventBus:
    """Delivers each event to every observer, in subscription order.

    An observer that raises is reported once and unsubscribed, so a broken
    display never stops a search; an observer with ``critical = True`` (the
    journal) raises through instead.
    """

    def __init__(self, observers: tuple[Observer, ...] = ()):
        self._observers: list[Observer] = list(observers)

    def subscribe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def emit(self, event: Event) -> Event:
        if not event.at:  # stamped once, before any observer sees it
            object.__setattr__(event, "at", time.time())
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception as err:
                if getattr(observer, "critical", False):
                    raise
                self._observers.remove(observer)
                name = getattr(observer, "__qualname__", type(observer).__name__)
                warnings.warn(
                    f"hbmagic: observer {name} failed on {type(event).__name__} and was removed: {err!r}", stacklevel=2
                )
        return event
