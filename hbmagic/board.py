"""The board of a search: what the live widget shows, folded from the event stream.

Pure bookkeeping: events go in (``apply``), JSON-ready state and batches of
changes come out (``take``). No clock of its own, no I/O, no threads; the
widget decides when to send and the static HTML is drawn from the same state.

A cell is one evaluation: the ``index``-th evaluation of rung ``rung`` of the
bracket ``s`` of iteration ``iteration``, keyed ``"iteration:s:rung:index"``.
Rung 0 places trials in plan order (trial ids are ordinals in plan order);
later rungs place them in the order they were promoted, best first. Cells the
plan announces but no event has touched yet are queued; they are not stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import islice
from typing import Any

from .events import (
    EvalStatus,
    EvaluationEnded,
    EvaluationStarted,
    Event,
    Reported,
    RungDone,
    SlotAdded,
    StudyEnded,
    StudyStarted,
    TrialCreated,
    TrialPromoted,
    TrialStopped,
)
from .plan import Algorithm

__all__ = ["Board", "Changes", "cell_key"]

# A cell's state. A planned cell no trial reached shows "queued", or "skipped" once the search completed.
QUEUED, RUNNING, DONE, PROMOTED, STOPPED, FAILED = ("queued", "running", "done", "promoted", "stopped", "failed")
HISTORY = 6  # finished evaluations a lane remembers
ERROR_CHARS = 600  # the end of an error kept for the hover text
REFRESH = 24  # cells re-sent with each batch, round robin, so a page that missed batches converges
REFRESH_CURVES = 2  # whole curves re-sent with each batch, round robin, for the same reason


def cell_key(iteration: int, s: int, rung: int, index: int) -> str:
    return f"{iteration}:{s}:{rung}:{index}"


def row_key(iteration: int, s: int) -> str:
    return f"{iteration}:{s}"


def json_number(value: float | None) -> float | str | None:
    """A finite float as is; NaN and infinities as text (JSON has neither)."""
    if value is None or math.isfinite(value):
        return value
    return repr(value)


_PLAIN = (bool, int, str, type(None))


def _plain_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of the configuration as JSON can carry it."""
    for value in config.values():
        if not (type(value) in _PLAIN or (type(value) is float and math.isfinite(value))):
            return {name: _plain(v) for name, v in config.items()}
    return dict(config)


def _plain(value: Any) -> Any:
    """A configuration value JSON can carry (numbers, strings, booleans, None); anything else as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return json_number(value)
    return repr(value)


@dataclass
class Changes:
    """One batch of changes, ready to send: each part is None when it did not change."""

    seq: int
    delta: dict[str, Any] | None
    layout: bool
    lanes: list[dict[str, Any]] | None
    summary: bool
    more: bool  # changes are left for the next batch


class Board:
    """The state of the bracket board, lanes, curves and summary of one search."""

    def __init__(self) -> None:
        # Created once and cleared in place: the widget's traits hold these very objects.
        self.cells: dict[str, dict[str, Any]] = {}
        self.trials: dict[str, dict[str, Any]] = {}
        self.curves: dict[str, list[list[float]]] = {}
        self.seq = 0
        self.reset()

    def reset(self) -> None:
        self.plan: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self.cells.clear()
        self.trials.clear()
        self.curves.clear()
        self.lanes: list[dict[str, Any]] = []
        self.status = "starting"
        self.message = ""
        self.started = 0.0
        self.ended: float | None = None
        self.evaluations = 0
        self.failures = 0
        self.resource = 0.0
        self._resource_now = 0.0  # trained in this session (a resumed study replays older work)
        self.running = 0
        self.metric: str | None = None
        self.mode = "min"
        self._planned_evaluations: int | None = None
        self._planned_resource: float | None = None
        self._asha = False
        self._asha_trials: int | None = None  # ASHA's max_trials: what its time left is estimated from
        self._eta = 3
        self._budgets: dict[int, list[float]] = {}  # bracket s -> its rung budgets
        self._offset: dict[tuple[int, int], int] = {}  # (iteration, s) -> first trial id (synchronous plans)
        self._next: dict[tuple[int, int, int], int] = {}  # (iteration, s, rung) -> next free index
        self._row: dict[int, tuple[int, int]] = {}  # trial -> (iteration, s)
        self._where: dict[tuple[int, int], str] = {}  # (trial, rung) -> cell key
        self._slot_of: dict[int, int] = {}  # trial -> slot running it
        self._reported: set[tuple[int, int]] = set()  # evaluations that reported a point
        self._best: tuple[float, float, int] | None = None  # (budget, signed value, trial)
        self._order: list[str] = []  # every stored cell, in the order it appeared
        self._refresh_at = 0
        self._curve_order: list[str] = []  # every trial with a curve, in the order its first point came
        self._curve_refresh_at = 0
        self._dirty_cells: dict[str, None] = {}
        self._dirty_trials: dict[str, None] = {}
        self._points: dict[str, int] = {}  # trial -> index of its first point not sent yet
        self._layout = False
        self._cleared = True  # the next batch tells the front-end to drop what it had
        self._lanes = False
        self._summary = False

    # -- events ------------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        """Fold one event into the board."""
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _started(self, e: StudyStarted) -> None:
        self.reset()
        plan = e.plan
        self._asha = plan.algorithm is Algorithm.ASHA
        self._asha_trials, self._eta = (plan.max_trials if self._asha else None), plan.eta
        self._budgets = {b.s: [r.budget for r in b.rungs] for b in plan.brackets}
        iterations = 1 if self._asha else plan.iterations
        rows = []
        ordinal = 0
        for iteration in range(iterations):
            for bracket in plan.brackets:
                rows.append(
                    {
                        "key": row_key(iteration, bracket.s),
                        "iteration": iteration,
                        "s": bracket.s,
                        "rungs": [{"n": r.n, "budget": r.budget} for r in bracket.rungs],
                    }
                )
                self._offset[(iteration, bracket.s)] = ordinal
                ordinal += bracket.n
        if not self._asha:
            self._planned_evaluations = plan.evaluations * plan.iterations
            self._planned_resource = float(plan.resource * plan.iterations)
        budgets = sorted({r.budget for b in plan.brackets for r in b.rungs})
        self.plan = {
            "title": plan.describe(),
            "algorithm": plan.algorithm.value,
            "eta": plan.eta,
            "iterations": plan.iterations,
            "maxBudget": plan.max_budget,
            "minBudget": plan.min_budget,
            "budgets": budgets,
            "rows": rows,
            "evaluations": self._planned_evaluations,
            "resource": self._planned_resource,
        }
        self.metric, self.mode = e.metric, e.mode
        self.info = {
            "study": e.study,
            "metric": e.metric,
            "mode": e.mode,
            "seed": e.seed,
            "space": dict(e.space),
            "slots": list(e.slots),
            "resumed": e.resumed,
            "reused": e.reused,
        }
        self.lanes = [_lane(label, label.rsplit(" #", 1)[0]) for label in e.slots]
        self.status = "running"
        self.started = e.at
        self._layout = self._lanes = self._summary = True

    def _slot_added(self, e: SlotAdded) -> None:
        while len(self.lanes) <= e.slot:
            self.lanes.append(_lane(f"{e.device} #{len(self.lanes)}", e.device))
        self.lanes[e.slot].update(label=e.label, device=e.device)
        if self.info:
            self.info["slots"] = [lane["label"] for lane in self.lanes]
        self._layout = self._lanes = self._summary = True

    def _created(self, e: TrialCreated) -> None:
        self._row[e.trial] = (e.iteration, e.bracket)
        self.trials[str(e.trial)] = {
            "c": _plain_config(e.config),
            "i": e.iteration,
            "b": e.bracket,
            "s": QUEUED,
            "k": "",
        }
        # Synchronous plans: trial ids are ordinals in plan order, so rung 0 keeps plan order.
        index = None if self._asha else e.trial - self._offset.get((e.iteration, e.bracket), e.trial)
        self._place(e.trial, 0, index)

    def _place(self, trial: int, rung: int, index: int | None = None) -> str:
        """The cell of ``trial`` at ``rung``, stored (queued) the first time it is seen."""
        key = self._where.get((trial, rung))
        if key is not None:
            return key
        iteration, s = self._row.get(trial, (0, 0))
        if index is None:
            slot = (iteration, s, rung)
            index = self._next.get(slot, 0)
            self._next[slot] = index + 1
        key = cell_key(iteration, s, rung, index)
        self._where[(trial, rung)] = key
        self.cells[key] = {"t": trial, "s": QUEUED}
        self._order.append(key)
        self._touch(key, trial)
        return key

    def _touch(self, key: str, trial: int) -> None:
        self._dirty_cells[key] = None
        info = self.trials.get(str(trial))
        if info is not None:
            state = self.cells[key]["s"]
            if info["s"] != state or info["k"] != key:
                info["s"], info["k"] = state, key
                self._dirty_trials[str(trial)] = None

    def _set(self, trial: int, rung: int, state: str, **extra: Any) -> str:
        key = self._place(trial, rung)
        cell = self.cells[key]
        cell["s"] = state
        for name, value in extra.items():
            if value is None:
                cell.pop(name, None)
            else:
                cell[name] = value
        self._touch(key, trial)
        return key

    def _evaluation_started(self, e: EvaluationStarted) -> None:
        previous = self._slot_of.get(e.trial)
        if previous is not None and previous != e.slot:  # a resumed study: it restarted elsewhere
            self._free_lane(previous)
        key = self._set(e.trial, e.rung, RUNNING)
        self._slot_of[e.trial] = e.slot
        while len(self.lanes) <= e.slot:
            label = f"{e.device} #{len(self.lanes)}"
            self.lanes.append(_lane(label, e.device))
        lane = self.lanes[e.slot]
        if lane["trial"] is None:
            self.running += 1
        lane.update(
            trial=e.trial,
            rung=e.rung,
            budget=e.budget,
            start=e.start,
            step=e.start,
            since=e.at,
            key=key,
            device=e.device,
        )
        self._lanes = self._summary = True

    def _reported_event(self, e: Reported) -> None:
        slot = self._slot_of.get(e.trial)
        if slot is not None:
            self.lanes[slot]["step"] = e.step
            self._lanes = True
        value = self._metric_of(e.metrics)
        if value is None or not math.isfinite(value):
            return
        self._point(e.trial, e.step, value)
        self._reported.add((e.trial, e.rung))

    def _metric_of(self, metrics: dict[str, float]) -> float | None:
        if self.metric is None:
            if len(metrics) != 1:
                return None
            self.metric = next(iter(metrics))
            self.info["metric"] = self.metric
            self._layout = True
        return metrics.get(self.metric)

    def _point(self, trial: int, step: float, value: float) -> None:
        curve = self.curves.get(str(trial))
        if curve is None:
            curve = self.curves[str(trial)] = []
            self._curve_order.append(str(trial))
        self._points.setdefault(str(trial), len(curve))
        curve.append([step, value])

    def _evaluation_ended(self, e: EvaluationEnded) -> None:
        slot = self._slot_of.pop(e.trial, None)
        if e.status is EvalStatus.COMPLETED:
            key = self._set(e.trial, e.rung, DONE, v=json_number(e.value), e=None)
            if e.value is not None and math.isfinite(e.value) and (e.trial, e.rung) not in self._reported:
                self._point(e.trial, e.budget, e.value)  # no report: the returned value at the budget
            self._better(e.trial, e.budget, e.value)
        elif e.status is EvalStatus.FAILED:
            key = self._set(e.trial, e.rung, FAILED, e=_tail(e.error or "failed"), v=None)
        else:  # interrupted: it runs again on resume
            key = self._set(e.trial, e.rung, QUEUED)
        self._reported.discard((e.trial, e.rung))
        if e.status is not EvalStatus.INTERRUPTED:
            # Resource counted as the plan counts it (r_i - r_{i-1}), whether or not the trial resumed.
            share = e.budget - self._previous_budget(e.trial, e.rung)
            self.evaluations += 1
            self.resource += share
            if e.at >= self.started:
                self._resource_now += share
            if e.status is EvalStatus.FAILED:
                self.failures += 1
        if slot is not None:
            lane = self.lanes[slot]
            if lane["trial"] == e.trial:
                self._free_lane(slot)
            lane["hist"] = [key, *[k for k in lane["hist"] if k != key]][:HISTORY]
        self._lanes = self._summary = True

    def _previous_budget(self, trial: int, rung: int) -> float:
        budgets = self._budgets.get(self._row.get(trial, (0, 0))[1])
        return budgets[rung - 1] if budgets and 0 < rung <= len(budgets) else 0

    def _free_lane(self, slot: int) -> None:
        lane = self.lanes[slot]
        if lane["trial"] is not None:
            self.running -= 1
        lane.update(trial=None, key=None)

    def _better(self, trial: int, budget: float, value: float | None) -> None:
        if value is None or not math.isfinite(value):
            return
        signed = value if self.mode == "min" else -value
        candidate = (budget, signed, trial)
        best = self._best
        if best is None or budget > best[0] or (budget == best[0] and (signed, trial) < (best[1], best[2])):
            self._best = candidate

    def _promoted(self, e: TrialPromoted) -> None:
        if e.rung > 0:
            self._set(e.trial, e.rung - 1, PROMOTED, r=[e.rank, None, None])
        self._place(e.trial, e.rung)

    def _stopped(self, e: TrialStopped) -> None:
        self._set(e.trial, e.rung, STOPPED, r=[e.rank, e.of, json_number(e.cutoff)])

    def _rung_done(self, e: RungDone) -> None:
        for trial in e.promoted:
            key = self._where.get((trial, e.rung))
            if key is not None and self.cells[key]["s"] == PROMOTED:
                rank = self.cells[key].get("r", [None])[0]
                self._set(trial, e.rung, PROMOTED, r=[rank, None, json_number(e.cutoff)])

    def _ended(self, e: StudyEnded) -> None:
        self.status = e.reason.value
        self.message = e.message
        self.ended = e.at
        for slot in range(len(self.lanes)):
            self._free_lane(slot)
        for (trial, rung), key in self._where.items():
            if self.cells[key]["s"] == RUNNING:
                self._set(trial, rung, QUEUED)
        self._slot_of.clear()
        self.running = 0
        self._lanes = self._summary = True

    # -- state out ---------------------------------------------------------------------------

    @property
    def best(self) -> dict[str, Any] | None:
        if self._best is None:
            return None
        budget, signed, trial = self._best
        value = signed if self.mode == "min" else -signed
        info = self.trials.get(str(trial), {})
        return {"trial": trial, "value": value, "budget": budget, "config": info.get("c", {}), "key": info.get("k")}

    @property
    def expected_resource(self) -> float | None:
        """The resource the whole search trains: the plan's, or for ASHA with ``max_trials`` an estimate.

        ASHA's promotions are not planned. Its estimate takes ``max_trials`` trials
        at the first rung and 1/eta of those that reach a rung at the next, but never
        fewer than have already reached it; it grows as ASHA promotes more than that.
        Without ``max_trials`` (a time limit ends ASHA) there is none.
        """
        if not self._asha:
            return self._planned_resource
        if not self._asha_trials or not self._budgets:
            return None
        ((s, budgets),) = self._budgets.items()
        expected, previous, total = float(self._asha_trials), 0.0, 0.0
        for rung, budget in enumerate(budgets):
            expected = max(expected, self._next.get((0, s, rung), 0))  # trials placed at this rung so far
            total += expected * (budget - previous)
            expected, previous = expected / self._eta, budget
        return total

    def summary(self, now: float) -> dict[str, Any]:
        """Counts against the plan, elapsed, an estimate of the time left, and the best so far."""
        end = self.ended if self.ended is not None else now
        elapsed = max(0.0, end - self.started) if self.started else 0.0
        eta = None
        planned = self.expected_resource
        if self.status == "running" and planned and self._resource_now > 0 and elapsed > 0:
            left = max(0.0, planned - self.resource)
            eta = left * elapsed / self._resource_now
        return {
            "status": self.status,
            "message": self.message,
            "evaluations": self.evaluations,
            "planned": self._planned_evaluations,
            "resource": self.resource,
            "resourcePlanned": self._planned_resource,
            "failures": self.failures,
            "running": self.running,
            "elapsed": elapsed,
            "eta": eta,
            "best": self.best,
            "metric": self.metric,
            "mode": self.mode,
        }

    @property
    def pending(self) -> bool:
        return bool(
            self._dirty_cells or self._dirty_trials or self._points or self._layout or self._lanes or self._summary
        )

    def take(self, limit: int) -> Changes:
        """The changes since the last batch: at most ``limit`` cells, trials and points together, plus a few
        refreshed cells and curves; what is left waits for the next batch."""
        self.seq += 1
        cells = {key: dict(self.cells[key]) for key in _pop(self._dirty_cells, limit)}
        trials = {key: dict(self.trials[key]) for key in _pop(self._dirty_trials, limit - len(cells))}
        points: dict[str, list[Any]] = {}  # trial -> [index of the first point, points]: applying twice is harmless
        budget = limit - len(cells) - len(trials)
        while self._points and budget > 0:
            trial = next(iter(self._points))
            first = self._points[trial]
            new = self.curves[trial][first : first + budget]
            points[trial] = [first, [list(p) for p in new]]
            budget -= len(new)
            if first + len(new) < len(self.curves[trial]):
                self._points[trial] = first + len(new)
            else:
                del self._points[trial]
        for key in _round_robin(self._order, self._refresh_at, REFRESH):
            cells.setdefault(key, dict(self.cells[key]))
        self._refresh_at += REFRESH
        curves = {}  # trial -> its whole curve, which replaces what the front-end has
        for trial in _round_robin(self._curve_order, self._curve_refresh_at, REFRESH_CURVES):
            if trial not in points:
                curves[trial] = [list(p) for p in self.curves[trial]]
        self._curve_refresh_at += REFRESH_CURVES
        delta = {"seq": self.seq, "cells": cells, "trials": trials, "points": points, "curves": curves}
        if self._cleared:
            delta["reset"] = True
            self._cleared = False
        lanes = [dict(lane, hist=list(lane["hist"])) for lane in self.lanes] if self._lanes else None
        changes = Changes(self.seq, delta, self._layout, lanes, self._summary, False)
        self._layout = self._lanes = self._summary = False
        changes.more = self.pending
        return changes

    def state(self, now: float) -> dict[str, Any]:
        """Everything, as one JSON-ready dict (the snapshot a front-end can draw from)."""
        return {
            "seq": self.seq,
            "plan": self.plan,
            "info": self.info,
            "cells": self.cells,
            "trials": self.trials,
            "curves": self.curves,
            "lanes": self.lanes,
            "summary": self.summary(now),
        }


def _lane(label: str, device: str) -> dict[str, Any]:
    return {
        "label": label,
        "device": device,
        "trial": None,
        "rung": 0,
        "budget": 0,
        "start": 0,
        "step": 0,
        "since": 0.0,
        "key": None,
        "hist": [],
    }


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= ERROR_CHARS else "…" + text[-ERROR_CHARS:]


def _round_robin(items: list[str], at: int, count: int) -> list[str]:
    """``count`` items from position ``at`` on, wrapping around (each item at most once)."""
    if not items:
        return []
    return [items[(at + i) % len(items)] for i in range(min(count, len(items)))]


def _pop(ordered: dict[str, None], limit: int) -> list[str]:
    keys = list(islice(ordered, limit))
    for key in keys:
        del ordered[key]
    return keys


_HANDLERS = {
    StudyStarted: Board._started,
    SlotAdded: Board._slot_added,
    TrialCreated: Board._created,
    EvaluationStarted: Board._evaluation_started,
    Reported: Board._reported_event,
    EvaluationEnded: Board._evaluation_ended,
    TrialPromoted: Board._promoted,
    TrialStopped: Board._stopped,
    RungDone: Board._rung_done,
    StudyEnded: Board._ended,
}
