"""``tune``: a Hyperband search from Python, the engine the magic stands on."""

from __future__ import annotations

import inspect
import random
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import OptionError, SearchFailed
from .events import EndReason, EventBus, Observer, StudyEnded, StudyStarted
from .executors import make_executor
from .options import Options
from .result import Result
from .runner import Runner, RunnerOptions
from .scheduler import make_scheduler
from .space import Space
from .states import StateStore

__all__ = ["tune"]


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
    return run_search(objective, Space(space), options, observers)


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


def run_search(
    objective: Callable[[Any], Any],
    space: Space,
    options: Options,
    observers: Iterable[Observer] = (),
    study_name: str = "memory",
) -> Result:
    """Run a search from validated options (``tune`` and the magic come here)."""
    _check_objective(objective)
    plan = options.plan()
    _check_size(space, plan.configurations * plan.iterations or (options.max_trials or 0))
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)
    executor = make_executor(
        options.executor,
        workers=options.workers,
        devices=options.devices,
        trials_per_device=options.trials_per_device,
        cluster=options.cluster,
    )
    result = Result()
    bus = EventBus((result, *observers))
    scheduler = make_scheduler(plan, space, seed, options.mode)
    runner = Runner(
        scheduler,
        executor,
        objective,
        bus,
        StateStore(),
        RunnerOptions(options.metric, options.time_limit, options.trial_timeout, options.max_failures, options.offload),
    )
    bus.emit(
        StudyStarted(
            study_name,
            plan,
            space.to_text(),
            options.metric,
            options.mode,
            seed,
            tuple(s.label for s in executor.slots),
        )
    )
    reason, message = runner.run()
    bus.emit(StudyEnded(reason, message))
    if runner.names_error is not None:
        raise runner.names_error
    if reason in (EndReason.ALL_FAILING, EndReason.MAX_FAILURES):
        raise SearchFailed(message, result)
    return result
