"""The Result: an observer that builds the outcome of a search from its events.

Because it is built from events only, the same Result comes out of a live
search and of a journal replayed after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .events import (
    EndReason,
    EvalStatus,
    EvaluationEnded,
    EvaluationStarted,
    Event,
    Reported,
    StudyEnded,
    StudyStarted,
    TrialCreated,
    TrialPromoted,
    TrialStopped,
)
from .plan import Plan
from .scheduler import is_good

__all__ = ["Best", "EvaluationRecord", "Result", "TrialRecord", "TrialStatus"]


class TrialStatus(str, Enum):
    PENDING = "pending"  # created or promoted, waiting for a slot
    RUNNING = "running"
    PROMOTED = "promoted"  # done at its rung, going on to the next
    STOPPED = "stopped"  # missed its rung's cutoff
    COMPLETED = "completed"  # reached its bracket's last rung
    FAILED = "failed"


@dataclass
class EvaluationRecord:
    rung: int
    budget: float
    status: EvalStatus
    value: float | None
    duration: float
    slot: int | None
    error: str | None = None


@dataclass
class TrialRecord:
    """One trial: its configuration, what happened to it, and every metric it reported."""

    id: int
    iteration: int
    bracket: int
    config: dict[str, Any]
    seed: int
    status: TrialStatus = TrialStatus.PENDING
    rung: int = 0
    budget: float = 0  # the budget of its last completed evaluation
    value: float | None = None  # the metric of its last completed evaluation
    metrics: dict[float, dict[str, float]] = field(default_factory=dict)  # step -> name -> value
    evaluations: list[EvaluationRecord] = field(default_factory=list)
    error: str | None = None
    output: str = ""
    stop_reason: str | None = None

    def curve(self, metric: str) -> list[tuple[float, float]]:
        """``(step, value)`` of ``metric``, in step order."""
        return sorted((step, values[metric]) for step, values in self.metrics.items() if metric in values)


@dataclass(frozen=True)
class Best:
    trial: int
    config: dict[str, Any]
    value: float
    budget: float
    metric: str

    def __str__(self) -> str:
        values = ", ".join(f"{k}={_short(v)}" for k, v in self.config.items())
        return f"{self.metric}={_short(self.value)} (trial {self.trial}, budget {_short(self.budget)}): {values}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value) if isinstance(value, str) else str(value)


class Result:
    """The outcome of a search, kept up to date from its events.

    Attributes:
        study: The study's name.
        plan: The Plan that ran.
        trials: TrialRecord by trial id.
        reason: Why the search ended (None while it runs).
    """

    def __init__(self) -> None:
        self.study: str | None = None
        self.plan: Plan | None = None
        self.metric: str | None = None
        self.mode = "min"
        self.seed: int | None = None
        self.trials: dict[int, TrialRecord] = {}
        self.reason: EndReason | None = None
        self.message = ""
        self.reused = 0
        self.resumed = False
        self.elapsed = 0.0
        self._began: float | None = None
        self._slots: dict[int, int] = {}  # trial -> the slot its running evaluation started on

    def __call__(self, event: Event) -> None:
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _study_started(self, e: StudyStarted) -> None:
        self.study, self.plan, self.metric, self.mode, self.seed = e.study, e.plan, e.metric, e.mode, e.seed
        self.reused, self.resumed = e.reused, e.resumed
        self.reason = None
        self._began = e.at

    def _trial_created(self, e: TrialCreated) -> None:
        self.trials.setdefault(e.trial, TrialRecord(e.trial, e.iteration, e.bracket, e.config, e.seed))

    def _evaluation_started(self, e: EvaluationStarted) -> None:
        trial = self.trials[e.trial]
        trial.status, trial.rung = TrialStatus.RUNNING, e.rung
        self._slots[e.trial] = e.slot

    def _reported(self, e: Reported) -> None:
        self.trials[e.trial].metrics.setdefault(e.step, {}).update(e.metrics)

    def _evaluation_ended(self, e: EvaluationEnded) -> None:
        trial = self.trials[e.trial]
        slot = self._slots.pop(e.trial, None)
        trial.evaluations.append(EvaluationRecord(e.rung, e.budget, e.status, e.value, e.duration, slot, e.error))
        if e.output:
            trial.output += e.output
        if e.status is EvalStatus.COMPLETED:
            trial.budget, trial.value, trial.status = e.budget, e.value, TrialStatus.COMPLETED
            if self.metric is None and len(e.metrics) == 1:
                self.metric = next(iter(e.metrics))
        elif e.status is EvalStatus.FAILED:
            trial.status, trial.error = TrialStatus.FAILED, e.error
        else:
            trial.status = TrialStatus.PENDING

    def _trial_promoted(self, e: TrialPromoted) -> None:
        self.trials[e.trial].status = TrialStatus.PROMOTED

    def _trial_stopped(self, e: TrialStopped) -> None:
        trial = self.trials[e.trial]
        trial.status = TrialStatus.STOPPED
        cutoff = "nothing was promoted" if e.cutoff is None else f"cutoff {_short(e.cutoff)}"
        trial.stop_reason = f"rank {e.rank} of {e.of} at rung {e.rung} ({cutoff})"

    def _study_ended(self, e: StudyEnded) -> None:
        self.reason, self.message = e.reason, e.message
        if self._began is not None:
            self.elapsed = e.at - self._began

    @property
    def best(self) -> Best | None:
        """The best configuration among those evaluated at the highest budget any trial reached."""
        done = [t for t in self.trials.values() if is_good(t.value)]
        if not done:
            return None
        top = max(t.budget for t in done)
        sign = 1.0 if self.mode == "min" else -1.0
        winner = min((t for t in done if t.budget == top), key=lambda t: (sign * t.value, t.id))  # type: ignore[operator]
        return Best(winner.id, dict(winner.config), winner.value, winner.budget, self.metric or "value")  # type: ignore[arg-type]

    @property
    def evaluations(self) -> int:
        """Evaluations that completed or failed (interrupted ones are not counted)."""
        return sum(1 for t in self.trials.values() for e in t.evaluations if e.status is not EvalStatus.INTERRUPTED)

    @property
    def failures(self) -> int:
        return sum(1 for t in self.trials.values() for e in t.evaluations if e.status is EvalStatus.FAILED)

    @property
    def complete(self) -> bool:
        return self.reason is EndReason.COMPLETED

    def iteration_winners(self) -> list[tuple[int, TrialRecord]]:
        """Each iteration's best trial at the highest budget reached in it."""
        winners = []
        sign = 1.0 if self.mode == "min" else -1.0
        for iteration in sorted({t.iteration for t in self.trials.values()}):
            done = [t for t in self.trials.values() if t.iteration == iteration and is_good(t.value)]
            if done:
                top = max(t.budget for t in done)
                winners.append(
                    (iteration, min((t for t in done if t.budget == top), key=lambda t: (sign * t.value, t.id)))  # type: ignore[operator]
                )
        return winners

    def to_dataframe(self):
        """One row per trial: its identity, status, budget, metric and hyperparameters (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError("Result.to_dataframe() needs pandas: pip install 'hbmagic[pandas]'") from err
        fixed = ("trial", "iteration", "bracket", "rung", "budget", "status", "value", "error")
        rows = []
        for t in sorted(self.trials.values(), key=lambda t: t.id):
            row: dict[str, Any] = {
                "trial": t.id,
                "iteration": t.iteration,
                "bracket": t.bracket,
                "rung": t.rung,
                "budget": t.budget,
                "status": t.status.value,
                "value": t.value,
                "error": t.error,
            }
            for name, value in t.config.items():
                row[f"config_{name}" if name in fixed else name] = value
            rows.append(row)
        frame = pd.DataFrame(rows)
        if self.metric and self.metric not in frame.columns:
            frame = frame.rename(columns={"value": self.metric})
        return frame

    def summary(self) -> str:
        """A few lines: how the search ended, what it did, and the best configuration."""
        planned = ""
        if self.plan is not None and self.plan.evaluations:
            planned = f" of {self.plan.evaluations * self.plan.iterations:,} planned"
        status = self.reason.value if self.reason else "running"
        lines = [
            f"study {self.study}: {status}; {self.evaluations:,} evaluations{planned} of {len(self.trials):,} trials"
            + (f", {self.failures} failed" if self.failures else "")
            + (f", {self.elapsed:.1f} s" if self.elapsed else "")
        ]
        if self.message:
            lines.append(self.message)
        direction = "minimized" if self.mode == "min" else "maximized"
        best = self.best
        lines.append(f"best ({direction} {self.metric or 'value'}): {best}" if best else "no evaluation completed yet")
        winners = self.iteration_winners()
        if len(winners) > 1 and best is not None:
            held = sum(1 for _, t in winners if t.config == best.config)
            ran = len({t.iteration for t in self.trials.values() if t.config == best.config})
            lines.append(
                "iteration winners: "
                + "; ".join(f"{i + 1}: trial {t.id} ({_short(t.value)})" for i, t in winners)
                + f". The best configuration won {held} of the {ran} iteration(s) it ran in."
            )
        return "\n".join(lines)

    __str__ = summary

    def __repr__(self) -> str:
        return f"<hbmagic.Result {self.summary().splitlines()[0]}>"


_HANDLERS = {
    StudyStarted: Result._study_started,
    TrialCreated: Result._trial_created,
    EvaluationStarted: Result._evaluation_started,
    Reported: Result._reported,
    EvaluationEnded: Result._evaluation_ended,
    TrialPromoted: Result._trial_promoted,
    TrialStopped: Result._trial_stopped,
    StudyEnded: Result._study_ended,
}
