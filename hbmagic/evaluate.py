"""One evaluation, on whatever worker runs it: build the Trial, run the objective, say how it ended.

This is the only code that runs on workers (threads, spawned processes, Dask),
so it imports nothing heavy and returns plain data.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import statecodec
from .capture import capture_output, tail
from .events import EvalStatus, Reported
from .scheduler import Job
from .trial import CancelCheck, MetricError, Stopped, Trial, to_metric

__all__ = ["Outcome", "Task", "evaluate"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Task:
    """Everything a worker needs for one evaluation."""

    job: Job
    start: float  # what ``state`` has reached; 0 when there is none
    state: dict | bytes | None
    slot: int
    device: str  # the device the objective sees ("cuda:0" inside a pinned process)
    metric: str | None
    want_bytes: bool = False  # serialize the committed state (journal, or a remote runner)
    offload: bool = False  # move torch state to the CPU after the evaluation

    @property
    def key(self) -> tuple[int, int]:
        return (self.job.trial, self.job.rung)


@dataclass
class Outcome:
    """How an evaluation ended, as plain data."""

    status: EvalStatus
    metrics: dict[str, float]
    names: tuple[str, ...] = ()  # every metric name reported
    error: str | None = None
    output: str = ""
    duration: float = 0.0
    state: dict | None = None  # the committed state object (same process only)
    state_bytes: bytes | None = None
    reason: str | None = None  # why an evaluation was interrupted ("interrupt", "stop", "time limit", "timeout")
    state_error: str | None = None


def _format_failure(err: BaseException, task: Task) -> str:
    """The traceback without hbmagic's own frames, with CUDA out-of-memory said as such."""
    frames = traceback.extract_tb(err.__traceback__)
    user = [f for f in frames if not os.path.abspath(f.filename).startswith(_PACKAGE)]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(user or frames)]
    lines += traceback.format_exception_only(type(err), err)
    text = "".join(lines)
    if type(err).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(err):
        text = f"out of memory on {task.device} at budget {task.job.budget}\n{text}"
    return text


def _result_metrics(returned: Any, trial: Trial, metric: str | None) -> tuple[dict[str, float], tuple[str, ...]]:
    if trial.reports:
        names = tuple(dict.fromkeys(name for _, values in trial.reports for name in values))
        return dict(trial.latest), names
    if isinstance(returned, dict):
        values = {str(k): to_metric(str(k), v) for k, v in returned.items()}
        return values, tuple(values)
    if returned is None:
        raise MetricError("the objective reported no metric and returned None; call report(...) or return the metric")
    name = metric or "value"
    return {name: to_metric(name, returned)}, (name,)


def evaluate(
    objective: Callable[[Trial], Any], task: Task, send: Callable[[Reported], None], cancelled: CancelCheck
) -> Outcome:
    """Run ``objective`` for ``task``; never raises except for errors of hbmagic itself."""
    began = time.perf_counter()
    state = task.state
    if isinstance(state, bytes):
        state = statecodec.loads(state, task.device)
    elif state is not None and task.offload:
        statecodec.move_to(state, task.device)
    job = task.job
    trial = Trial(
        id=job.trial,
        config=dict(job.config),
        seed=job.seed,
        iteration=job.iteration,
        bracket=job.bracket,
        rung=job.rung,
        budget=job.budget,
        device=task.device,
        start=task.start if state else 0,
        state=state,
        metric=task.metric,
        send=send,
        cancelled=cancelled,
    )
    _set_torch_device(task.device)
    outcome = Outcome(EvalStatus.COMPLETED, {})
    with capture_output() as buffer:
        try:
            returned = objective(trial)
            outcome.metrics, outcome.names = _result_metrics(returned, trial, task.metric)
        except Stopped as stop:
            outcome.status, outcome.reason = EvalStatus.INTERRUPTED, str(stop) or "stop"
        except KeyboardInterrupt:
            outcome.status, outcome.reason = EvalStatus.INTERRUPTED, "interrupt"
        except Exception as err:
            outcome.status, outcome.error = EvalStatus.FAILED, _format_failure(err, task)
    outcome.output = tail(buffer)
    outcome.duration = time.perf_counter() - began
    if outcome.status is EvalStatus.COMPLETED:
        _commit(trial, task, outcome)
    return outcome


def _commit(trial: Trial, task: Task, outcome: Outcome) -> None:
    state = trial.state
    if not isinstance(state, dict) or not state:
        return
    if task.want_bytes:
        try:
            outcome.state_bytes = statecodec.dumps(state)
        except Exception as err:  # an unpicklable state still serves this run from memory
            outcome.state_error = f"trial.state could not be saved ({type(err).__name__}: {err})"
    if task.offload:
        statecodec.move_to(state, "cpu")
    outcome.state = state


def _set_torch_device(device: str) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.set_device(device)
