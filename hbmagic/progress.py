"""Compact text progress of a search: the brackets and the best so far, updated in place.

Three ways to show it, picked from where it runs:

- in a Jupyter kernel (no widget): one display, updated through its display id;
- in a terminal: the block is rewritten in place (cursor up, clear, write);
- anywhere else (a pipe, a log): a line when a bracket is done, and the final block.

It never writes one line per evaluation. Updates are throttled.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TextIO

from .events import (
    BracketDone,
    EvalStatus,
    EvaluationEnded,
    EvaluationStarted,
    Event,
    StudyEnded,
    StudyStarted,
    TrialCreated,
)
from .plan import Plan
from .result import Result

__all__ = ["TextProgress", "in_jupyter_kernel", "render"]

_MARKS = {"done": "✓", "running": "▸", "waiting": " "}


class _Counts:
    """Evaluations by (bracket, rung): done (completed or failed) and running.

    A resumed study replays its journal first: an evaluation started before
    this run (``at`` earlier than ``since``) and never ended is not running now.
    """

    def __init__(self) -> None:
        self.done: dict[tuple[int, int], int] = defaultdict(int)
        self.running: dict[tuple[int, int], int] = defaultdict(int)
        self.failed = 0
        self.bracket_of: dict[int, int] = {}
        self.since = 0.0

    def __call__(self, event: Event) -> None:
        if isinstance(event, StudyStarted):
            self.since = event.at
        elif isinstance(event, TrialCreated):
            self.bracket_of[event.trial] = event.bracket
        elif isinstance(event, EvaluationStarted) and event.at >= self.since:
            self.running[self.bracket_of.get(event.trial, -1), event.rung] += 1
        elif isinstance(event, EvaluationEnded):
            key = (self.bracket_of.get(event.trial, -1), event.rung)
            if event.at >= self.since:
                self.running[key] = max(0, self.running[key] - 1)
            if event.status is not EvalStatus.INTERRUPTED:
                self.done[key] += 1
            if event.status is EvalStatus.FAILED:
                self.failed += 1

    @property
    def total_done(self) -> int:
        return sum(self.done.values())

    @property
    def total_running(self) -> int:
        return sum(self.running.values())


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _rung_cell(done: int, running: int, planned: int | None) -> str:
    if planned is None:  # ASHA: rungs fill as trials arrive
        text = str(done)
        mark = _MARKS["running"] if running else " "
    else:
        text = f"{done}/{planned}"
        mark = _MARKS["done"] if done >= planned else _MARKS["running"] if running else _MARKS["waiting"]
    return f"{text}{mark}"


def render(plan: Plan, counts: _Counts, result: Result, elapsed: float, ended: str | None = None) -> list[str]:
    """The progress block: a status line, then one line per bracket (a column per rung)."""
    iterations = plan.iterations
    planned = plan.evaluations * iterations
    total = f"/{planned:,}" if planned else ""
    status = [f"{counts.total_done:,}{total} evaluations"]
    if counts.total_running:
        status.append(f"{counts.total_running} running")
    if counts.failed:
        status.append(f"{counts.failed} failed")
    status.append(f"{elapsed:.1f} s")
    best = result.best
    metric = result.metric or "value"
    if best is not None:
        status.append(f"best ({result.mode}) {metric}={_fmt(best.value)}, trial {best.trial} at {_fmt(best.budget)}")
    lines = ["hyperband " + ("running" if ended is None else ended) + " · " + " · ".join(status)]
    cells = []
    for bracket in plan.brackets:
        row = []
        for i, rung in enumerate(bracket.rungs):
            n = None if rung.n is None else rung.n * iterations
            key = (bracket.s, i)
            row.append(_rung_cell(counts.done.get(key, 0), counts.running.get(key, 0), n))
        cells.append(row)
    width = max((len(c) for row in cells for c in row), default=0)
    columns = max((len(row) for row in cells), default=0)
    for bracket, row in zip(plan.brackets, cells, strict=True):
        budgets = "→".join(_fmt(r.budget) for r in bracket.rungs)
        boxes = " ".join(c.rjust(width) for c in row).ljust((width + 1) * columns)
        lines.append(f"  s={bracket.s:<2} {boxes}  budgets {budgets}")
    return lines


def in_jupyter_kernel() -> bool:
    """True inside a Jupyter kernel (where a front-end can show widgets), False in a terminal IPython."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class TextProgress:
    """An observer that shows a search as compact text, updated in place.

    Args:
        stream: Where to write outside a kernel (default: ``sys.stdout`` as it is now).
        interval: Seconds between two updates at most (events in between are folded in).
        kernel: Show through a display id (True), or write to ``stream`` (False); default: detect.
        clock: The clock used for throttling.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interval: float = 0.1,
        kernel: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        # Taken now, before a search routes sys.stdout to per-trial buffers.
        self.stream = stream if stream is not None else sys.stdout
        if kernel is None:
            kernel = in_jupyter_kernel()
        self.kernel = kernel
        self.tty = not kernel and _isatty(self.stream)
        self.interval = interval
        self.clock = clock
        self.result = Result()
        self.counts = _Counts()
        self.plan: Plan | None = None
        self.updates = 0  # how many times the block was drawn
        self._began = 0.0
        self._last = -float("inf")
        self._drawn = 0  # lines drawn last time (terminal)
        self._handle: Any = None
        self._brackets_said: set[tuple[int, int]] = set()

    def __call__(self, event: Event) -> None:
        self.result(event)
        self.counts(event)
        if isinstance(event, StudyStarted):
            self.plan = event.plan
            self._began = event.at
            self._draw(event.at, force=True)
        elif self.plan is None:
            return
        elif isinstance(event, StudyEnded):
            self._draw(event.at, force=True, ended=event.reason.value)
        elif isinstance(event, BracketDone):
            key = (event.iteration, event.bracket)
            if not self.kernel and not self.tty and key not in self._brackets_said:
                self._brackets_said.add(key)
                self._write_line(self.lines(event.at)[0] + f" · bracket s={event.bracket} done")
            self._draw(event.at, force=True)
        else:
            self._draw(event.at or time.time())

    def lines(self, now: float, ended: str | None = None) -> list[str]:
        """The block as it would be drawn at wall time ``now``."""
        if self.plan is None:
            return []
        return render(self.plan, self.counts, self.result, max(0.0, now - self._began), ended)

    def _draw(self, now: float, force: bool = False, ended: str | None = None) -> None:
        tick = self.clock()
        if not force and tick - self._last < self.interval:
            return
        if not (self.kernel or self.tty) and ended is None:
            return  # a plain stream gets bracket lines and the final block only
        self._last = tick
        self.updates += 1
        lines = self.lines(now, ended)
        if self.kernel:
            self._show(lines)
        elif self.tty:
            self._rewrite(lines)
        else:
            self._write_line("\n".join(lines))

    def _show(self, lines: list[str]) -> None:
        from IPython.display import display

        data = {"text/plain": "\n".join(lines)}
        if self._handle is None:
            self._handle = display(data, raw=True, display_id=True)
        else:
            self._handle.update(data, raw=True)

    def _rewrite(self, lines: list[str]) -> None:
        columns = shutil.get_terminal_size((100, 20)).columns
        lines = [line if len(line) < columns else line[: columns - 2] + "…" for line in lines]
        up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
        self.stream.write(up + "\n".join(lines) + "\n")
        self.stream.flush()
        self._drawn = len(lines)

    def _write_line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
