"""The scheduler: a pure state machine that only decides.

Results go in (``tell``), jobs come out (``next_job``), and decisions (trial
created, promoted, stopped, rung and bracket done) collect in an outbox that
the runner drains into the event stream. No clock, no I/O, no threads.

Synchronous Hyperband runs every bracket of every iteration concurrently: a
rung waits for its own results only, so a free worker always finds work while
any bracket has some. Its decisions depend on the seed and the results alone,
never on the order in which results arrive. ASHA promotes a trial as soon as
it is in the top ``1/eta`` of its rung so far.

``get_state()`` is built only of what the event stream also carries (results,
promotions, created trials), so a journal can rebuild a scheduler with
``set_state`` without ever storing a snapshot.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .events import BracketDone, Event, RungDone, TrialCreated, TrialPromoted, TrialStopped
from .plan import Algorithm, Bracket, Plan
from .space import Space, derive_seed

__all__ = ["AshaScheduler", "Job", "Scheduler", "SyncScheduler", "make_scheduler", "rank", "rank_key", "trial_seed"]

Value = float | None  # None: the evaluation failed


@dataclass(frozen=True)
class Job:
    """One evaluation to run: trial ``trial`` trained to ``budget`` (its rung reached ``previous`` before)."""

    trial: int
    iteration: int
    bracket: int
    rung: int
    budget: float
    previous: float
    config: dict[str, Any]
    seed: int


def trial_seed(seed: int, trial: int) -> int:
    """A trial's seed: derived from the search seed and the trial's identity only."""
    return derive_seed(seed, "trial", trial) % 2**31


def is_good(value: Value) -> bool:
    return value is not None and math.isfinite(value)


def rank_key(trial: int, value: Value, mode: str) -> tuple[int, float, int]:
    """Sorts best first: finite values by metric (ties by trial id), then NaN, infinite and failed."""
    if is_good(value):
        return (0, value if mode == "min" else -value, trial)  # type: ignore[operator]
    return (1, 0.0, trial)


def rank(results: dict[int, Value], mode: str) -> list[int]:
    """Trial ids best first (see ``rank_key``)."""
    return sorted(results, key=lambda trial: rank_key(trial, results[trial], mode))


class Scheduler:
    """What every scheduler offers the runner."""

    def __init__(self, plan: Plan, space: Space, seed: int, mode: str = "min"):
        self.plan, self.space, self.seed, self.mode = plan, space, seed, mode
        self._outbox: list[Event] = []
        self._configs: dict[int, dict[str, Any]] = {}  # sampled once per trial
        self._created: set[int] = set()
        self._running: set[tuple[int, int]] = set()

    def next_job(self) -> Job | None:
        """The next evaluation to run, or None when none is ready now."""
        raise NotImplementedError

    def tell(self, trial: int, rung: int, value: Value) -> None:
        """Record a finished evaluation (``value`` None when it failed) and decide what follows."""
        raise NotImplementedError

    def release(self, trial: int, rung: int) -> None:
        """Give back a job that did not finish (interrupted, worker lost): it becomes ready again."""
        raise NotImplementedError

    @property
    def finished(self) -> bool:
        raise NotImplementedError

    def drain(self) -> list[Event]:
        """The decisions made since the last call, in order."""
        out, self._outbox = self._outbox, []
        return out

    @property
    def running(self) -> int:
        return len(self._running)

    def get_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _job(self, trial: int, iteration: int, bracket: Bracket, rung: int) -> Job:
        config, seed = self._config(trial), trial_seed(self.seed, trial)
        if trial not in self._created:
            self._created.add(trial)
            self._outbox.append(TrialCreated(trial, iteration, bracket.s, config, seed))
        self._running.add((trial, rung))
        previous = bracket.rungs[rung - 1].budget if rung else 0
        return Job(trial, iteration, bracket.s, rung, bracket.rungs[rung].budget, previous, config, seed)

    def _config(self, trial: int) -> dict[str, Any]:
        config = self._configs.get(trial)
        if config is None:
            config = self._configs[trial] = self.space.config(self.seed, trial)
        return config


class _RungState:
    __slots__ = ("decided", "members", "results")

    def __init__(self, members: Iterable[int] = ()):
        self.members: list[int] = list(members)
        self.results: dict[int, Value] = {}
        self.decided = False


class SyncScheduler(Scheduler):
    """Hyperband and successive halving (also the fixed-total-budget form), brackets concurrent.

    Trial ids are ordinals in plan order: iteration, then bracket, then index,
    so the configuration of (iteration, bracket, index) depends on the seed alone.
    """

    def __init__(self, plan: Plan, space: Space, seed: int, mode: str = "min"):
        super().__init__(plan, space, seed, mode)
        self._reset(plan.iterations)

    def _reset(self, iterations: int) -> None:
        self._brackets: list[tuple[int, Bracket]] = []  # (iteration, bracket) in plan order
        self._rungs: dict[tuple[int, int], _RungState] = {}  # (bracket key, rung) -> state
        self._where: dict[int, int] = {}  # trial -> bracket key
        self._ready: list[tuple[tuple, int, int]] = []  # heap of (priority, trial, rung)
        self._open = 0  # brackets not done
        self._extend(iterations)

    def _extend(self, iterations: int) -> None:
        ordinal = len(self._where)
        for iteration in range(len(self._brackets) // max(1, len(self.plan.brackets)), iterations):
            for bracket in self.plan.brackets:
                key = len(self._brackets)
                self._brackets.append((iteration, bracket))
                members = range(ordinal, ordinal + bracket.n)
                ordinal += bracket.n
                self._rungs[(key, 0)] = _RungState(members)
                for trial in members:
                    self._where[trial] = key
                    self._push(trial, 0)
                self._open += 1

    def _push(self, trial: int, rung: int) -> None:
        key = self._where[trial]
        iteration, bracket = self._brackets[key]
        start = bracket.rungs[rung - 1].budget if rung else 0
        # Most urgent first: a job is as urgent as the resource its bracket must still train after
        # it (its tail, behind rung barriers), or as 3/4 of its own length when that is more; then
        # the longer job, the earlier iteration, plan order. Largest-tail-first keeps every
        # bracket's chain moving; the long first-rung jobs of the least aggressive brackets still
        # start early. (benchmarks/utilization.py measured this against alternatives.)
        own = bracket.rungs[rung].budget - start
        tail = bracket.rungs[-1].budget - bracket.rungs[rung].budget
        urgency = max(tail, 0.75 * own)
        heapq.heappush(self._ready, ((-urgency, -own, iteration, key, trial), trial, rung))

    def next_job(self) -> Job | None:
        if not self._ready:
            return None
        _, trial, rung = heapq.heappop(self._ready)
        iteration, bracket = self._brackets[self._where[trial]]
        return self._job(trial, iteration, bracket, rung)

    def release(self, trial: int, rung: int) -> None:
        self._running.discard((trial, rung))
        self._push(trial, rung)

    def tell(self, trial: int, rung: int, value: Value) -> None:
        self._running.discard((trial, rung))
        key = self._where[trial]
        state = self._rungs[(key, rung)]
        if trial not in state.members or trial in state.results:
            raise ValueError(f"trial {trial} has no open evaluation at rung {rung}")
        state.results[trial] = value
        if len(state.results) == len(state.members):
            self._decide(key, rung)

    def _decide(self, key: int, rung: int) -> None:
        iteration, bracket = self._brackets[key]
        state = self._rungs[(key, rung)]
        state.decided = True
        order = rank(state.results, self.mode)
        last = rung == len(bracket.rungs) - 1
        keep = 0 if last else bracket.rungs[rung + 1].n or 0
        promoted = [t for t in order[:keep] if is_good(state.results[t])]
        cutoff = state.results[promoted[-1]] if promoted else None
        if not last:
            for position, trial in enumerate(order, 1):
                value = state.results[trial]
                if trial in promoted:
                    self._outbox.append(TrialPromoted(trial, rung + 1, bracket.rungs[rung + 1].budget, position))
                elif value is not None:
                    self._outbox.append(TrialStopped(trial, rung, value, position, len(order), cutoff))
        self._outbox.append(RungDone(iteration, bracket.s, rung, tuple(promoted), cutoff))
        if promoted:
            self._rungs[(key, rung + 1)] = _RungState(promoted)
            for trial in promoted:
                self._push(trial, rung + 1)
        else:
            self._open -= 1
            best = order[0] if order and is_good(state.results[order[0]]) else None
            self._outbox.append(
                BracketDone(iteration, bracket.s, best, state.results[best] if best is not None else None)
            )

    @property
    def finished(self) -> bool:
        return self._open == 0

    def get_state(self) -> dict[str, Any]:
        results = sorted(
            (
                [trial, rung, value]
                for (_, rung), state in self._rungs.items()
                for trial, value in state.results.items()
            ),
            key=lambda item: (item[1], item[0]),
        )
        return {"results": results, "created": sorted(self._created), "promotions": []}

    def set_state(self, state: dict[str, Any]) -> None:
        """Rebuild from results: decisions are recomputed, so they equal the original ones (see ``drain``)."""
        self._reset(len(self._brackets) // len(self.plan.brackets))
        self._outbox.clear()
        self._created = set(state.get("created", ()))
        self._running.clear()
        pending = sorted((rung, trial, value) for trial, rung, value in state["results"])
        ready = {(trial, 0) for trial in self._where}
        for rung, trial, value in pending:
            if (trial, rung) not in ready:
                raise ValueError(f"state has a result for trial {trial} at rung {rung}, which this plan never runs")
            ready.discard((trial, rung))
            self._running.add((trial, rung))
            before = len(self._outbox)
            self.tell(trial, rung, value)
            for event in self._outbox[before:]:
                if isinstance(event, TrialPromoted):
                    ready.add((event.trial, event.rung))
        self._ready = [item for item in self._ready if (item[1], item[2]) in ready]
        heapq.heapify(self._ready)
        # The recomputed decisions stay in the outbox: a resumed study emits those its journal lost.

    def extend(self, iterations: int) -> None:
        """Run more iterations than the plan said (a finished study extended)."""
        self._extend(iterations)


class AshaScheduler(Scheduler):
    """Asynchronous successive halving (Li et al., MLSys 2020), one bracket.

    A trial at rung ``k`` is promoted when it is among the top
    ``floor(n_k / eta)`` of the ``n_k`` results at rung ``k`` so far. New
    trials start when nothing is promotable, until ``max_trials``.

    With ``max_trials`` a trial is stopped as soon as no result still to come
    can promote it, so its state is freed at once instead of at the end (see
    ``_stop_hopeless``). That changes no promotion: it only says early what the
    end would say.
    """

    def __init__(self, plan: Plan, space: Space, seed: int, mode: str = "min"):
        super().__init__(plan, space, seed, mode)
        self.bracket = plan.brackets[0]
        self._pending: list[tuple[int, int]] = []  # (trial, rung) handed out before, to run again
        self._ended = False
        self._clear()

    def _clear(self) -> None:
        rungs = len(self.bracket.rungs)
        self._results: list[dict[int, Value]] = [{} for _ in range(rungs)]
        self._order: list[list[tuple[int, float, int]]] = [[] for _ in range(rungs)]  # rank keys, best first
        self._waiting: list[list[tuple[int, float, int]]] = [[] for _ in range(rungs)]  # good, not promoted yet
        self._promoted: list[set[int]] = [set() for _ in range(rungs)]  # trials promoted *to* rung k
        self._stopped: set[int] = set()  # stopped before the end: no result to come can promote them
        self._good = [0] * rungs  # finite results per rung
        self._hopeless = [0] * rungs  # trials with a finite result stopped per rung
        self._room: list[int | None] = [None] * rungs  # the places that may still promote: only ever shrinks

    @property
    def _exhausted(self) -> bool:
        return self.plan.max_trials is not None and len(self._created) >= self.plan.max_trials

    def next_job(self) -> Job | None:
        if self._pending:
            trial, rung = self._pending.pop(0)
            return self._job(trial, 0, self.bracket, rung)
        promotion = self._promotable()
        if promotion is not None:
            trial, rung, position = promotion
            self._promoted[rung + 1].add(trial)
            del self._waiting[rung][0]
            self._outbox.append(TrialPromoted(trial, rung + 1, self.bracket.rungs[rung + 1].budget, position))
            return self._job(trial, 0, self.bracket, rung + 1)
        if self._exhausted:
            return None
        return self._job(len(self._created), 0, self.bracket, 0)

    def _promotable(self) -> tuple[int, int, int] | None:
        """The best trial of the highest rung that is in its rung's top 1/eta and not promoted yet."""
        for rung in range(len(self.bracket.rungs) - 2, -1, -1):
            waiting, order = self._waiting[rung], self._order[rung]
            if waiting:
                position = bisect.bisect_left(order, waiting[0])
                if position < len(order) // self.plan.eta:
                    return waiting[0][2], rung, position + 1
        return None

    def release(self, trial: int, rung: int) -> None:
        self._running.discard((trial, rung))
        self._pending.append((trial, rung))

    def tell(self, trial: int, rung: int, value: Value) -> None:
        self._running.discard((trial, rung))
        if trial in self._results[rung]:
            raise ValueError(f"trial {trial} already has a result at rung {rung}")
        self._stop_hopeless((rung, self._record(trial, rung, value)))

    def _record(self, trial: int, rung: int, value: Value) -> int:
        """Keep a result in its rung's order; returns its place there."""
        self._results[rung][trial] = value
        key = rank_key(trial, value, self.mode)
        position = bisect.bisect_left(self._order[rung], key)
        self._order[rung].insert(position, key)
        self._good[rung] += not key[0]
        if not key[0] and rung < len(self.bracket.rungs) - 1 and trial not in self._promoted[rung + 1]:
            bisect.insort(self._waiting[rung], key)
        return position

    def _stop_hopeless(self, new: tuple[int, int] | None = None) -> None:
        """Stop each trial that no result still to come can promote (only with ``max_trials``).

        ``most`` bounds the results rung ``k`` will ever hold: ``max_trials`` at
        the first rung; above it, the trials promoted to it so far, plus those of
        the rung below that may still be promoted, plus every result the rung
        below may still get. Only the top ``most // eta`` places of a rung can
        promote, and a trial's place only moves down as results arrive, so a
        trial below them is done, as is one whose metric is NaN or infinite.
        The bound only shrinks: after one new result (``new``: its rung and
        place) only the places between the new and the old bound, and the new
        result's, need a look.
        """
        if self.plan.max_trials is None:
            return
        most = self.plan.max_trials
        for rung in range(len(self.bracket.rungs) - 1):
            order, promoted, results = self._order[rung], self._promoted[rung + 1], self._results[rung]
            room, looked = most // self.plan.eta, self._room[rung]
            self._room[rung] = room
            if looked is None:  # the first look: every place below the bound, and every bad result
                places = range(min(room, self._good[rung]), len(order))
            else:  # a result placed above the old bound pushed one place across it
                places = range(room, min(len(order), looked + 1))
            if new is not None and new[0] == rung:
                places = [*places, new[1]]
            for position in places:
                bad, _, trial = order[position]
                if (
                    (bad or position >= room)
                    and trial not in promoted
                    and trial not in self._stopped
                    and results[trial] is not None  # a failed trial is done already
                ):
                    self._stop(trial, rung, position, room)
            hopeful = self._good[rung] - len(promoted) - self._hopeless[rung]
            most = len(promoted) + hopeful + (most - len(order))

    def _stop(self, trial: int, rung: int, position: int, room: int) -> None:
        order, results = self._order[rung], self._results[rung]
        self._stopped.add(trial)
        self._hopeless[rung] += not order[position][0]
        last = min(room, self._good[rung]) - 1  # the worst place that may still promote
        cutoff = results[order[last][2]] if last >= 0 else None
        self._outbox.append(TrialStopped(trial, rung, results[trial], position + 1, len(order), cutoff))

    @property
    def finished(self) -> bool:
        return self._exhausted and not self._running and not self._pending and self._promotable() is None

    def _end(self) -> None:
        """Stop, for good, every trial that was not promoted past its last rung and is not stopped yet."""
        self._ended = True
        for rung in range(len(self.bracket.rungs) - 1):
            results = self._results[rung]
            promoted = [t for _, _, t in self._order[rung] if t in self._promoted[rung + 1]]
            cutoff = results[promoted[-1]] if promoted else None
            for position, (_, _, trial) in enumerate(self._order[rung], 1):
                value = results[trial]
                if trial not in self._promoted[rung + 1] and trial not in self._stopped and value is not None:
                    self._outbox.append(TrialStopped(trial, rung, value, position, len(results), cutoff))
        top = self._order[-1]
        best = top[0][2] if top and not top[0][0] else None
        self._outbox.append(BracketDone(0, self.bracket.s, best, self._results[-1][best] if best is not None else None))

    def drain(self) -> list[Event]:
        if self.finished and not self._ended:
            self._end()
        return super().drain()

    def get_state(self) -> dict[str, Any]:
        results = [[t, rung, res[t]] for rung, res in enumerate(self._results) for t in sorted(res)]
        promotions = [[t, rung] for rung, trials in enumerate(self._promoted) for t in sorted(trials)]
        return {"results": results, "created": sorted(self._created), "promotions": promotions}

    def set_state(self, state: dict[str, Any]) -> None:
        """Rebuild from results and promotions; the early stops they imply are recomputed (see ``drain``)."""
        self._created = set(state.get("created", ()))
        self._outbox.clear()
        self._clear()
        for trial, rung in state.get("promotions", ()):
            self._promoted[rung].add(trial)
        for trial, rung, value in state["results"]:
            self._record(trial, rung, value)
        self._stop_hopeless()
        # Evaluations handed out but never finished run again first.
        self._pending = sorted((t, 0) for t in self._created if t not in self._results[0]) + sorted(
            (t, rung) for rung, trials in enumerate(self._promoted) for t in trials if t not in self._results[rung]
        )
        self._running.clear()
        # The recomputed stops stay in the outbox: a resumed study emits those its journal lost.


def make_scheduler(plan: Plan, space: Space, seed: int, mode: str = "min") -> Scheduler:
    """The scheduler for ``plan``'s algorithm."""
    cls = AshaScheduler if plan.algorithm is Algorithm.ASHA else SyncScheduler
    return cls(plan, space, seed, mode)
