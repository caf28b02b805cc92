"""``tune``: a Hyperband search from Python, the engine the magic stands on."""

from __future__ import annotations

import dataclasses
import inspect
import random
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import OptionError, SearchFailed
from .events import EndReason, Event, EventBus, Observer, SlotAdded, StudyEnded, StudyStarted, TrialStopped
from .executors import make_executor
from .options import Options
from .plan import Plan
from .result import Result
from .runner import Runner, RunnerOptions
from .scheduler import make_scheduler
from .space import Space
from .states import StateStore
from .study import (
    Study,
    committed_states,
    default_name,
    objective_source,
    replay,
    reused_evaluations,
    scheduler_state,
    storage_folder,
    study_key,
)

__all__ = ["Search", "run_search", "tune"]


def tune(
    objective: Callable[[Any], Any],
    space: Mapping[str, Any],
    *,
    max_budget: int | float | None = None,
    min_budget: int | float = 1,
    eta: int | None = None,
    algorithm: str = "hyperband",
    convention: str = "alg1",
    brackets: int | None = None,
    total_budget: int | float | None = None,
    n_configs: int | None = None,
    iterations: int = 1,
    max_trials: int | None = None,
    time_limit: float | None = None,
    metric: str | None = None,
    mode: str = "min",
    seed: int | None = None,
    executor: Any = None,
    workers: int | None = None,
    devices: Any = None,
    trials_per_device: int = 1,
    cluster: str | None = None,
    offload: bool = False,
    storage: Any = None,
    study: str | None = None,
    new: bool = False,
    max_failures: int | None = None,
    trial_timeout: float | None = None,
    observers: Iterable[Observer] = (),
) -> Result:
    """Run a Hyperband search of ``objective`` over ``space``.

    Args:
        objective: Called as ``objective(trial)`` for each evaluation. It trains
            ``trial.config`` from ``trial.start`` to ``trial.budget``, keeps what
            the next rung continues from in ``trial.state``, and calls
            ``trial.report(...)`` (or returns the metric).
        space: Each hyperparameter's name mapped to a distribution object
            (``loguniform(1e-3, 1e-1)``), its header text, or a constant.
        max_budget: The resource a trial reaches at most (``--max-budget``).
        min_budget: The smallest resource a trial gets (``--min-budget``).
        eta: Keep ``1/eta`` at each rung (3; 2 for ``total_budget``).
        algorithm: ``"hyperband"``, ``"sh"`` or ``"asha"``.
        convention: ``"alg1"`` (Algorithm 1) or ``"table"`` (the paper's Table 1).
        brackets: Run only the N most aggressive brackets.
        total_budget: With ``n_configs``, successive halving with a fixed total budget.
        n_configs: Configurations for the fixed-total-budget form.
        iterations: Repeat the Hyperband outer loop.
        max_trials: Stop after this many trials (asha needs it or ``time_limit``).
        time_limit: Stop starting evaluations after this many seconds.
        metric: The reported metric to optimize (needed when several are reported).
        mode: ``"min"`` or ``"max"``.
        seed: All sampling derives from it (random when not given, and kept by the study).
        executor: ``"inline"``, ``"threads"``, ``"processes"``, ``"dask"``, or a ``distributed.Client``.
        workers: Slots when no GPU is used.
        devices: Devices to use, such as ``"0,1"`` or ``["cuda:0", "cuda:1"]``.
        trials_per_device: Trials packed on one device.
        cluster: A Dask scheduler address, with ``executor="dask"``.
        offload: Move torch state to the CPU between rungs (in-kernel executors).
        storage: A folder for the study's journal; without it nothing is saved.
        study: The study's name in ``storage``.
        new: Start afresh even if the study exists.
        max_failures: Stop after this many failed evaluations.
        trial_timeout: Fail an evaluation that runs longer than this many seconds.
        observers: Callables that receive every event of the search.

    Returns:
        The Result: best configuration, every trial, the plan.

    Raises:
        SearchFailed: Evaluations kept failing (``max_failures``, or the first
            ones all failed alike); its ``result`` holds what was done.
    """
    options = Options(
        max_budget=max_budget,
        min_budget=min_budget,
        eta=eta,
        algorithm=algorithm,
        convention=convention,
        brackets=brackets,
        total_budget=total_budget,
        n_configs=n_configs,
        iterations=iterations,
        max_trials=max_trials,
        time_limit=time_limit,
        metric=metric,
        mode=mode,
        seed=seed,
        executor=executor,
        workers=workers,
        devices=devices,
        trials_per_device=trials_per_device,
        cluster=cluster,
        offload=offload,
        storage=storage,
        study=study,
        new=new,
        max_failures=max_failures,
        trial_timeout=trial_timeout,
    )
    announce = print if options.storage is not None or options.study is not None else None
    return run_search(objective, Space(space), options, observers, announce=announce)


def _check_objective(objective: Callable[[Any], Any]) -> None:
    if not callable(objective):
        raise OptionError(f"the objective must be a callable taking the trial, not {type(objective).__name__}")
    try:
        inspect.signature(objective).bind(None)
    except TypeError:
        raise OptionError("the objective must take one argument, the trial: def objective(trial): ...") from None
    except ValueError:  # no signature (a builtin): let the call say
        pass


def _check_size(space: Space, needed: int) -> None:
    size = space.size
    if size is not None and needed > size:
        warnings.warn(
            f"hbmagic: the search space holds {size:,} configurations but the plan samples {needed:,}; "
            f"once all {size:,} have been tried they are sampled again, in a new order",
            stacklevel=3,
        )


class Search:
    """A search made ready: options checked, study opened (and locked), nothing run yet.

    Every mistake in what the user wrote is raised here, before anything runs
    or is displayed. ``banner`` is the first line to show: "new study ..." or
    "resuming ...: N of M evaluations reused". Use as a context manager, or
    call ``run``, which closes it.
    """

    def __init__(
        self,
        objective: Callable[[Any], Any],
        space: Space,
        options: Options,
        *,
        key_source: str | None = None,
        label: str | None = None,
        journaled: bool | None = None,
    ):
        _check_objective(objective)
        self.objective, self.space, self.options = objective, space, options
        plan = options.plan()
        self.executor = make_executor(
            options.executor,
            workers=options.workers,
            devices=options.devices,
            trials_per_device=options.trials_per_device,
            cluster=options.cluster,
        )
        self.study: Study | None = None
        self._started = False
        try:
            self.executor.prepare(objective)
            self._open(objective, space, options, plan, key_source, label, journaled)
        except BaseException:  # a cluster or workers started for this search must not outlive it
            self.close()
            raise

    def _open(
        self,
        objective: Callable[[Any], Any],
        space: Space,
        options: Options,
        plan: Plan,
        key_source: str | None,
        label: str | None,
        journaled: bool | None,
    ) -> None:
        self.history: list[Event] = []
        seed = options.seed
        if journaled is None:
            journaled = options.storage is not None or options.study is not None
        if journaled:
            storage = storage_folder(options.storage)
            key = study_key(
                key_source if key_source is not None else objective_source(objective),
                space.to_text(),
                options.key_part(),
                options.seed,
            )
            label = label or getattr(objective, "__name__", type(objective).__name__)
            name = options.study or default_name(label, key["key"])
            meta = {"plan": plan.to_dict(), "space": space.to_text(), "seed": seed, "label": label}
            if seed is None:
                meta["seed"] = seed = random.SystemRandom().randrange(2**31)
            self.study = Study.open(storage, name, key, options.new, meta)
            stored = self.study.meta()
            seed = stored["seed"]
            self.history = self.study.history()
            iterations = max(plan.iterations, Plan.from_dict(stored["plan"]).iterations)
            if iterations != plan.iterations:
                plan = dataclasses.replace(plan, iterations=iterations)
            if plan.to_dict() != stored["plan"]:
                self.study.journal.set_meta({"plan": plan.to_dict()})  # type: ignore[union-attr]
        elif seed is None:
            seed = random.SystemRandom().randrange(2**31)
        self.plan, self.seed = plan, seed
        self.name = self.study.name if self.study else "memory"
        _check_size(space, plan.configurations * plan.iterations or (options.max_trials or 0))

    @property
    def reused(self) -> int:
        return reused_evaluations(self.history)

    @property
    def planned(self) -> int | None:
        return self.plan.evaluations * self.plan.iterations if self.plan.evaluations else None

    @property
    def banner(self) -> str:
        if self.study is None:
            return f"hbmagic: search not journaled (no storage): {self.plan.describe()}"
        if not self.history:
            return f"new study {self.name} (in {self.study.folder.parent})"
        total = f" of {self.planned:,}" if self.planned else ""
        return f"resuming: {self.reused:,}{total} evaluations reused (study {self.name})"

    def run(self, observers: Iterable[Observer] = ()) -> Result:
        """Run (or resume) the search; returns its Result, partial after an interrupt."""
        self._started = True  # the runner shuts the executor down
        try:
            return self._run(list(observers))
        finally:
            self.close()

    def _run(self, observers: list[Observer]) -> Result:
        options, plan = self.options, self.plan
        result = Result()
        watchers = [result, *observers]
        journal = self.study.journal if self.study else None
        bus = EventBus(tuple(([journal] if journal else []) + watchers))
        scheduler = make_scheduler(plan, self.space, self.seed, options.mode)
        states = StateStore(self.study.states_folder if self.study else None)
        metric = options.metric
        if self.history:
            scheduler.set_state(scheduler_state(self.history))
            states.restore(committed_states(self.history, plan))
            if metric is None:
                metric = replay(self.history).metric
        runner = Runner(
            scheduler,
            self.executor,
            self.objective,
            bus,
            states,
            RunnerOptions(metric, options.time_limit, options.trial_timeout, options.max_failures, options.offload),
        )
        bus.emit(
            StudyStarted(
                self.name,
                plan,
                self.space.to_text(),
                options.metric,
                options.mode,
                self.seed,
                tuple(s.label for s in self.executor.slots),
                self.reused,
                bool(self.history),
            )
        )
        for stopped in _replay_into(self.history, scheduler.drain(), watchers, bus):
            states.free(stopped)
        reason, message = runner.run()
        bus.emit(StudyEnded(reason, message))
        if runner.names_error is not None:
            raise runner.names_error
        if reason in (EndReason.ALL_FAILING, EndReason.MAX_FAILURES):
            raise SearchFailed(message, result)
        return result

    def close(self) -> None:
        if not self._started:
            self._started = True
            self.executor.shutdown(wait=False)
        if self.study is not None:
            self.study.close()

    def __enter__(self) -> Search:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _replay_into(history: list[Event], recomputed: list[Event], watchers: list[Observer], bus: EventBus) -> list[int]:
    """Show a resumed study's past to the observers; emit (and journal) decisions the journal had lost.

    Returns the trials those lost decisions stopped.
    """
    for event in history:
        if not isinstance(event, StudyStarted | SlotAdded | StudyEnded):  # a past run's, not this one's
            for watcher in watchers:
                watcher(event)
    known = {_decision_key(e) for e in history}
    stopped = []
    for event in recomputed:
        if _decision_key(event) not in known:
            bus.emit(event)
            if isinstance(event, TrialStopped):
                stopped.append(event.trial)
    return stopped


def _decision_key(event: Event) -> tuple:
    return (
        type(event).__name__,
        getattr(event, "trial", None),
        getattr(event, "rung", None),
        getattr(event, "bracket", None),
        getattr(event, "iteration", None),
    )


def run_search(
    objective: Callable[[Any], Any],
    space: Space,
    options: Options,
    observers: Iterable[Observer] = (),
    *,
    key_source: str | None = None,
    label: str | None = None,
    announce: Callable[[str], Any] | None = None,
) -> Result:
    """Run a search from validated options; ``announce`` receives the banner line first."""
    with Search(objective, space, options, key_source=key_source, label=label) as search:
        if announce is not None:
            announce(search.banner)
        return search.run(observers)
