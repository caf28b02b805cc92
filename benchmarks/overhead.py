"""Engine and journal cost per evaluation.

One Hyperband iteration at R=81, eta=3 (206 evaluations) with a no-op
objective, executor inline, median of 5 runs, against a bare pure-Python
Hyperband loop in the same process. Then the same search journaled to a study
folder on the repository's disk, with the durability setting hbmagic ships.

Targets: at most 100 us of engine cost and 0.5 ms of journal cost per evaluation.

Run: .venv/bin/python benchmarks/overhead.py
"""

from __future__ import annotations

import contextlib
import io
import math
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import hbmagic

R, ETA, RUNS = 81, 3, 5
SPACE = {"lr": "loguniform(1e-3, 1e-1)", "units": "randint(8, 256)", "act": "choice('relu', 'tanh')"}


def noop(trial):
    return trial.config["lr"]


def bare_hyperband(objective, r_max: int = R, eta: int = ETA) -> int:
    """Li et al. Algorithm 1 in a dozen lines: no events, no state, no journal."""
    rng = random.Random(0)
    s_max = 0
    while eta ** (s_max + 1) <= r_max:
        s_max += 1
    evaluations = 0
    for s in range(s_max, -1, -1):
        n = -(-(s_max + 1) * eta**s // (s + 1))
        configs = [
            {"lr": math.exp(rng.uniform(math.log(1e-3), math.log(1e-1))), "units": rng.randint(8, 256), "act": "relu"}
            for _ in range(n)
        ]
        for i in range(s + 1):
            budget = r_max // eta ** (s - i)
            scored = sorted((objective_call(objective, c, budget), k) for k, c in enumerate(configs))
            evaluations += len(configs)
            configs = [configs[k] for _, k in scored[: max(len(configs) // eta, 0)]]
    return evaluations


class _Bare:
    def __init__(self, config, budget):
        self.config, self.budget = config, budget


def objective_call(objective, config, budget):
    return objective(_Bare(config, budget))


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def median_of(fn) -> float:
    fn()  # warm-up
    return statistics.median(timed(fn) for _ in range(RUNS))


def main() -> None:
    evaluations = bare_hyperband(noop)
    assert evaluations == 206
    bare = median_of(lambda: bare_hyperband(noop))
    engine = median_of(lambda: hbmagic.tune(noop, SPACE, max_budget=R, eta=ETA, seed=0, executor="inline"))
    per_eval = (engine - bare) / evaluations * 1e6
    print(f"one iteration, R={R}, eta={ETA}: {evaluations} evaluations, median of {RUNS} runs")
    print(f"  bare Hyperband loop:   {bare * 1e3:8.2f} ms")
    print(f"  hbmagic.tune (inline): {engine * 1e3:8.2f} ms")
    print(f"  engine cost:           {per_eval:8.1f} us per evaluation (target <= 100)")

    runs = [journaled(seed) for seed in range(RUNS + 1)][1:]  # the first run warms up
    per_eval_journal = (statistics.median(runs) - engine) / evaluations * 1e3
    print(f"  with the journal:      {statistics.median(runs) * 1e3:8.2f} ms (study folder on the repository's disk)")
    print(f"  journal cost:          {per_eval_journal:8.3f} ms per evaluation (target <= 0.5)")


def journaled(seed: int) -> float:
    """One journaled search in a fresh study folder beside the repository's files."""
    storage = Path(tempfile.mkdtemp(dir=Path(__file__).resolve().parent, prefix=".bench-storage-"))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return timed(lambda: hbmagic.tune(noop, SPACE, max_budget=R, eta=ETA, seed=seed, storage=storage))
    finally:
        shutil.rmtree(storage, ignore_errors=True)


if __name__ == "__main__":
    main()
