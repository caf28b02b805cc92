"""Cost of the processes executor: per-evaluation overhead against inline, worker start and replacement.

- Overhead per evaluation: a no-op objective, Hyperband at R=27 (69
  evaluations) and R=81 (206 evaluations); the slope between the two sizes
  cancels the fixed cost (starting workers). Median of 5 runs each.
- Worker start: ``start`` until the first no-op evaluation has come back.
- Replacement: after a worker dies (``os._exit``), the next evaluation on its
  slot starts a new worker; the time from the death being reported to that
  evaluation's outcome. Median of 5.

Run: .venv/bin/python benchmarks/processes.py
"""

from __future__ import annotations

import statistics
import time

import hbmagic
from hbmagic.evaluate import Task
from hbmagic.executors.base import Slot
from hbmagic.executors.processes import ProcessesExecutor
from hbmagic.scheduler import Job

RUNS = 5
SPACE = {"x": "uniform(0, 1)"}


def noop(trial):
    return trial.config["x"]


def dies(trial):
    if trial.config["x"] < 0:
        import os

        os._exit(1)
    return trial.config["x"]


def timed_search(executor: str, max_budget: int, workers: int | None) -> float:
    began = time.perf_counter()
    hbmagic.tune(noop, SPACE, max_budget=max_budget, eta=3, seed=0, executor=executor, workers=workers)
    return time.perf_counter() - began


def per_evaluation(executor: str, workers: int | None) -> float:
    small = statistics.median(timed_search(executor, 27, workers) for _ in range(RUNS))
    large = statistics.median(timed_search(executor, 81, workers) for _ in range(RUNS))
    return (large - small) / (206 - 69)


def task(trial: int, x: float) -> Task:
    return Task(Job(trial, 0, 0, 0, 1, 0, {"x": x}, trial), 0, None, 0, "cpu", None, want_bytes=True)


def start_and_replace() -> tuple[float, float]:
    executor = ProcessesExecutor((Slot(0, "cpu", "cpu #0"),))
    began = time.perf_counter()
    executor.start(dies, lambda event: None)
    executor.submit(task(0, 0.5)).result()
    started = time.perf_counter() - began
    replacements = []
    for i in range(RUNS):
        executor.submit(task(2 * i + 1, -1.0)).result()
        began = time.perf_counter()
        executor.submit(task(2 * i + 2, 0.5)).result()
        replacements.append(time.perf_counter() - began)
    executor.shutdown()
    return started, statistics.median(replacements)


def main() -> None:
    inline = per_evaluation("inline", None)
    processes = per_evaluation("processes", 1)
    started, replaced = start_and_replace()
    print(
        f"per evaluation, no-op objective: inline {inline * 1e3:.3f} ms, processes (1 worker) {processes * 1e3:.3f} ms"
    )
    print(f"processes overhead against inline: {(processes - inline) * 1e3:.3f} ms per evaluation (1 worker)")
    print(f"worker start to first result: {started * 1e3:.0f} ms; replacement after a death: {replaced * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
