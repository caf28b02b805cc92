"""The runner: drives the scheduler and an executor, and emits every change as an event.

It runs in the caller's thread (the kernel's). Reports and finished
evaluations from worker threads arrive through one queue; reports from the
runner's own thread (the inline executor) are emitted at once, so a display
updates while an inline evaluation trains.

Order of a finished evaluation: the trial's state is committed, then
``EvaluationEnded`` is emitted (the journal commits it), and only then does the
scheduler act on it. An interrupt during that sequence waits for its end.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from .capture import routed_output
from .errors import MetricNameError
from .evaluate import Outcome, Task
from .events import (
    EndReason,
    EvalStatus,
    EvaluationEnded,
    EvaluationStarted,
    EventBus,
    Reported,
    SlotAdded,
    TrialStopped,
)
from .executors.base import Executor
from .scheduler import Job, Scheduler
from .states import StateStore

__all__ = ["Runner", "RunnerOptions"]

EARLY_FAILURES = 3  # the first this many evaluations failing alike stop the search


@dataclass(frozen=True)
class RunnerOptions:
    metric: str | None = None
    time_limit: float | None = None
    trial_timeout: float | None = None
    max_failures: int | None = None
    offload: bool = False


@dataclass
class _Running:
    task: Task
    began: float
    cancelled: str | None = None
    future: Future[Outcome] | None = None  # None until submit returned


class _Critical:
    """A critical section of ``_Interrupts`` (a class, not a generator: it runs several times per evaluation)."""

    __slots__ = ("owner",)

    def __init__(self, owner: _Interrupts):
        self.owner = owner

    def __enter__(self) -> None:
        self.owner.depth += 1

    def __exit__(self, *exc: object) -> None:
        owner = self.owner
        owner.depth -= 1
        if not owner.depth and owner.pending:
            owner.pending = False
            raise KeyboardInterrupt


class _Interrupts:
    """Defers SIGINT while the runner is in a critical section (main thread only)."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending = False
        self.installed = False
        self._critical = _Critical(self)

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
            self.installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.depth:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def critical(self) -> _Critical:
        """``with interrupts.critical():`` an interrupt arriving inside waits for the block's end."""
        return self._critical


class Runner:
    """Runs one search to its end (or to an interrupt) and returns why it ended."""

    def __init__(
        self,
        scheduler: Scheduler,
        executor: Executor,
        objective: Callable[[Any], Any],
        bus: EventBus,
        states: StateStore,
        options: RunnerOptions,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.scheduler, self.executor, self.objective = scheduler, executor, objective
        self.bus, self.states, self.options, self.clock = bus, states, options, clock
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._running: dict[tuple[int, int], _Running] = {}
        self._stopping: EndReason | None = None
        self._message = ""
        self._failures = 0
        self._early: list[str | None] = []  # error signatures of the first evaluations (None: it did not fail)
        self._first_error = ""
        self._metric = options.metric
        self.names_error: MetricNameError | None = None
        self._state_warned = False
        self._last_rungs = {b.s: len(b.rungs) - 1 for b in scheduler.plan.brackets}
        self._announced = len(executor.slots)  # the slots StudyStarted names

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> tuple[EndReason, str]:
        """Run until the scheduler is done or the search stops; returns (reason, message)."""
        self._thread = threading.current_thread()
        self._deadline = None if self.options.time_limit is None else self.clock() + self.options.time_limit
        with routed_output(), _Interrupts() as self._interrupts:
            try:
                self.executor.start(self.objective, self._send)
                try:
                    self._loop()
                except KeyboardInterrupt:
                    self._stop(EndReason.INTERRUPTED, "interrupted: no new evaluation started; run again to resume")
                    self._wind_down()
            finally:
                self.executor.shutdown(wait=False)
        reason = self._stopping or EndReason.COMPLETED
        return reason, self._message

    def _loop(self) -> None:
        while True:
            if self._stopping is None:
                self._fill()
            if not self._running:
                if self._stopping is not None or self.scheduler.finished:
                    return
                if self.scheduler.running == 0:
                    raise RuntimeError("hbmagic: the scheduler has no job, nothing runs, yet the search is not done")
            self._step(self._tick())

    def _tick(self) -> float:
        if self._deadline is None and self.options.trial_timeout is None:
            return 0.25
        return 0.05

    def _step(self, timeout: float | None) -> None:
        try:
            kind, item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            kind, item = "", None
        while kind:
            with self._interrupts.critical():
                if kind == "report":
                    self.bus.emit(item)
                else:
                    self._finish(item)
            try:
                kind, item = self._inbox.get_nowait()
            except queue.Empty:
                kind = ""
        self._check_clock()

    def _wind_down(self) -> None:
        """Stop the running evaluations at their next report and wait for them; a second interrupt gives up."""
        for running in list(self._running.values()):
            if running.future is None:  # interrupted between submit and bookkeeping: its outcome is unknown
                self._end_interrupted(running.task, "interrupt")
            else:
                self.executor.cancel(running.task, "interrupt")
        try:
            while self._running:
                self._step(0.1)
        except KeyboardInterrupt:
            for key, running in list(self._running.items()):
                self.executor.abandon(running.task, "interrupt")
                if key in self._running:
                    self._end_interrupted(running.task, "interrupt")

    def _stop(self, reason: EndReason, message: str) -> None:
        if self._stopping is None:
            self._stopping, self._message = reason, message
        for running in self._running.values():
            if running.cancelled is None:
                running.cancelled = reason.value
                self.executor.cancel(running.task, reason.value)

    def _check_clock(self) -> None:
        now = self.clock()
        if self._deadline is not None and now >= self._deadline and self._stopping is None:
            self._stop(EndReason.TIME_LIMIT, f"time limit of {self.options.time_limit:g} s reached")
        limit = self.options.trial_timeout
        if limit is None:
            return
        for running in list(self._running.values()):
            age = now - running.began
            if age > limit and running.cancelled is None:
                running.cancelled = "timeout"
                self.executor.cancel(running.task, "timeout")
            elif age > limit * 2 + 5 and running.cancelled == "timeout":
                running.cancelled = "abandoned"
                self.executor.abandon(running.task, "timeout")

    # -- starting evaluations --------------------------------------------------------------

    def _free_slot(self) -> int | None:
        busy = {r.task.slot for r in self._running.values()}
        return next((slot.index for slot in self.executor.slots if slot.index not in busy), None)

    def _fill(self) -> None:
        """Start evaluations on free slots while the scheduler has jobs; finish at once those already done."""
        slots = self.executor.slots
        for slot in slots[self._announced :]:  # the executor gained slots (a Dask worker joined)
            self.bus.emit(SlotAdded(slot.index, slot.device, slot.label))
        self._announced = len(slots)
        while self._stopping is None and (slot := self._free_slot()) is not None:
            with self._interrupts.critical():
                job = self.scheduler.next_job()
                self._emit_decisions()
                if job is None:
                    return
                task = self._task(job, slot)
                device = self.executor.slots[slot].device
                self.bus.emit(EvaluationStarted(job.trial, job.rung, job.budget, task.start, slot, device))
                self._running[task.key] = _Running(task, self.clock())
            future = self.executor.submit(task)  # inline: the evaluation runs here
            with self._interrupts.critical():
                self._running[task.key].future = future
                if future.done():
                    self._finish((task, future))
                else:
                    future.add_done_callback(lambda f, task=task: self._inbox.put(("done", (task, f))))

    def _task(self, job: Job, slot: int) -> Task:
        device = self.executor.slots[slot].device
        state, reached = self.states.get(job.trial, device)
        if state is not None and not self.executor.in_process and not isinstance(state, bytes):
            state = self.states.as_bytes(job.trial)
        return Task(
            job=job,
            start=reached if state is not None else 0,
            state=state,
            slot=slot,
            device=device,
            metric=self._metric,
            want_bytes=self.states.persistent or not self.executor.in_process,
            offload=self.options.offload,
        )

    def _send(self, event: Reported) -> None:
        """Reports from the runner's thread go out at once; from workers, through the queue."""
        if threading.current_thread() is self._thread:
            with self._interrupts.critical():  # an interrupt lands after the observers, in report()
                self.bus.emit(event)
                self._check_clock()  # an inline evaluation is cancelled at this report
        else:
            self._inbox.put(("report", event))

    # -- finishing evaluations -------------------------------------------------------------

    def _finish(self, item: tuple[Task, Future[Outcome]]) -> None:
        task, future = item
        if task.key not in self._running:
            return  # already ended (abandoned)
        error = future.exception()
        outcome = future.result() if error is None else Outcome(EvalStatus.FAILED, {}, error=_internal(error))
        if outcome.status is EvalStatus.INTERRUPTED:
            if outcome.reason == "timeout":
                limit = self.options.trial_timeout
                outcome = Outcome(
                    EvalStatus.FAILED,
                    {},
                    error=f"timed out: the evaluation ran longer than trial_timeout={limit:g} s",
                    output=outcome.output,
                    duration=outcome.duration,
                )
            else:
                if outcome.reason == "interrupt" and self._stopping is None:
                    self._stop(EndReason.INTERRUPTED, "interrupted: no new evaluation started; run again to resume")
                self._end_interrupted(task, outcome.reason or "stop", outcome)
                return
        value = None
        if outcome.status is EvalStatus.COMPLETED:
            value, outcome = self._value(task, outcome)
            if self.names_error is not None:
                self._end_interrupted(task, "metric", outcome)
                self._stop(EndReason.ERROR, str(self.names_error))
                return
        del self._running[task.key]
        job = task.job
        saved = False
        if outcome.status is EvalStatus.COMPLETED:
            saved = self.states.commit(job.trial, job.rung, job.budget, outcome.state, outcome.state_bytes)
            outcome.state = outcome.state_bytes = None  # the store holds it now; a lingering future must not
            if outcome.state_error and not self._state_warned:
                self._state_warned = True
                warnings.warn(
                    f"hbmagic: {outcome.state_error}. A promoted trial restarts from budget 0 wherever its state "
                    "must travel (worker processes, Dask, a kernel restart)",
                    stacklevel=2,
                )
        self.bus.emit(
            EvaluationEnded(
                job.trial,
                job.rung,
                job.budget,
                outcome.status,
                value,
                outcome.metrics,
                outcome.error,
                outcome.output,
                outcome.duration,
                job.budget - task.start,
                saved,
            )
        )
        self.states.settle(job.trial, job.rung)
        self.scheduler.tell(job.trial, job.rung, value)
        if outcome.status is not EvalStatus.COMPLETED or job.rung == self._last_rung(job):
            self.states.free(job.trial)
        self._emit_decisions()
        self._count(outcome)

    def _last_rung(self, job: Job) -> int:
        return self._last_rungs[job.bracket]

    def _end_interrupted(self, task: Task, reason: str, outcome: Outcome | None = None) -> None:
        self._running.pop(task.key, None)
        self.states.drop_live(task.job.trial)
        self.scheduler.release(task.job.trial, task.job.rung)
        job = task.job
        self.bus.emit(
            EvaluationEnded(
                job.trial,
                job.rung,
                job.budget,
                EvalStatus.INTERRUPTED,
                error=reason,
                output=outcome.output if outcome else "",
                duration=outcome.duration if outcome else 0.0,
            )
        )

    def _value(self, task: Task, outcome: Outcome) -> tuple[float | None, Outcome]:
        """The optimized metric of a completed evaluation; a missing metric fails it."""
        metric = self._metric
        if metric is None:
            if len(outcome.names) > 1:
                names = ", ".join(outcome.names)
                self.names_error = MetricNameError(
                    f"the objective reported several metrics ({names}); say which one to optimize "
                    f"with metric=NAME (--metric NAME), one of: {names}",
                    outcome.names,
                )
                return None, outcome
            metric = self._metric = outcome.names[0]
        if metric not in outcome.metrics:
            seen = ", ".join(outcome.names) or "none"
            outcome.status = EvalStatus.FAILED
            outcome.error = f"the objective did not report the metric {metric!r} (metric=); it reported: {seen}"
            return None, outcome
        return outcome.metrics[metric], outcome

    def _emit_decisions(self) -> None:
        for event in self.scheduler.drain():
            self.bus.emit(event)
            if isinstance(event, TrialStopped):
                self.states.free(event.trial)

    def _count(self, outcome: Outcome) -> None:
        failed = outcome.status is EvalStatus.FAILED
        if len(self._early) < EARLY_FAILURES:
            self._early.append(_signature(outcome.error) if failed else None)
            if failed and not self._first_error:
                self._first_error = outcome.error or ""
            if len(self._early) == EARLY_FAILURES and self._early[0] is not None and len(set(self._early)) == 1:
                self._stop(
                    EndReason.ALL_FAILING,
                    f"the first {EARLY_FAILURES} evaluations all failed with the same error, so the search stopped. "
                    f"The error:\n{self._first_error}",
                )
        if failed:
            self._failures += 1
            limit = self.options.max_failures
            if limit is not None and self._failures >= limit:
                self._stop(
                    EndReason.MAX_FAILURES,
                    f"stopped after {self._failures} failed evaluations (max_failures={limit}). "
                    f"The last error:\n{outcome.error}",
                )


def _signature(error: str | None) -> str:
    """The last line of a traceback: the exception and its message."""
    lines = [line for line in (error or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _internal(error: BaseException) -> str:
    return f"hbmagic internal error while running the evaluation: {type(error).__name__}: {error}"
