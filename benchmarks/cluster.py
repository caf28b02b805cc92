"""The Dask executor on a real LocalCluster: cost per evaluation, whether its workers wait, and large states.

A LocalCluster of W worker processes (one thread each, loopback) is started
once and shared by every measurement:

- Overhead per evaluation: a no-op objective, Hyperband at R=27 (69
  evaluations) and R=81 (206); the slope between the two sizes cancels the
  fixed cost (registering the objective on the workers). Median of 5 runs
  each, next to the same for ``inline``.
- Busy fraction in real time: every epoch sleeps ``--epoch`` seconds, so
  Hyperband R=81, eta=3 (1,581 epochs) is a known amount of work; busy =
  work / (W x wall time), next to the ``threads`` executor with W slots and
  to what the virtual clock of ``utilization.py`` predicts for the same W.
- Large states: each trial keeps a ``--state-mib`` MiB state that its promoted
  evaluations continue from (a model's weights); the wall time of R=27 against
  the same search without states gives what moving states costs.

Run: .venv/bin/python benchmarks/cluster.py [--workers 2] [--epoch 0.01] [--state-mib 24]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from distributed import Client, LocalCluster
from utilization import simulate  # this folder's virtual-clock benchmark

import hbmagic
from hbmagic.plan import make_plan

RUNS = 5
SPACE = {"x": "uniform(0, 1)"}
EPOCHS = make_plan(max_budget=81, eta=3).resource  # 1,581: Hyperband R=81, eta=3, promoted trials resuming


def noop(trial):
    return trial.config["x"]


def timed(objective, executor, max_budget: int, workers: int | None = None) -> float:
    began = time.perf_counter()
    hbmagic.tune(objective, SPACE, max_budget=max_budget, eta=3, seed=0, executor=executor, workers=workers)
    return time.perf_counter() - began


def per_evaluation(executor) -> float:
    small = statistics.median(timed(noop, executor, 27) for _ in range(RUNS))
    large = statistics.median(timed(noop, executor, 81) for _ in range(RUNS))
    return (large - small) / (206 - 69)


def sleeper(seconds: float):
    def objective(trial):
        for epoch in range(int(trial.start), int(trial.budget)):
            time.sleep(seconds)
            trial.report(loss=trial.config["x"] + 1 / (epoch + 1))

    return objective


def with_state(mib: int):
    def objective(trial):
        state = trial.state
        if not state:
            state["weights"] = os.urandom(1 << 20) * mib
        trial.report(loss=trial.config["x"])

    return objective


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the LocalCluster (2)")
    parser.add_argument("--epoch", type=float, default=0.01, help="seconds one epoch sleeps (0.01)")
    parser.add_argument("--state-mib", type=int, default=24, help="size of each trial's state in MiB (24)")
    args = parser.parse_args()
    workers = args.workers
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    client = Client(cluster)
    try:
        inline = per_evaluation("inline")
        dask = per_evaluation(client)
        print(f"no-op evaluation: inline {inline * 1e3:.2f} ms, dask {dask * 1e3:.2f} ms (W={workers})")

        work = EPOCHS * args.epoch
        predicted = simulate("hyperband", 1, workers, 0, 0.0).busy
        print(f"busy fraction the virtual clock predicts for W={workers} (no noise): {predicted:.1%}")
        for name, executor in (("threads", "threads"), ("dask", client)):
            wall = timed(sleeper(args.epoch), executor, 81, workers)
            print(
                f"busy fraction, {name}: {work / (workers * wall):.1%} "
                f"(work {work:.1f} s on {workers} workers, wall {wall:.2f} s)"
            )

        plain = statistics.median(timed(noop, client, 27) for _ in range(3))
        heavy = statistics.median(timed(with_state(args.state_mib), client, 27) for _ in range(3))
        plan = make_plan(max_budget=27, eta=3)
        print(
            f"{args.state_mib} MiB states: R=27 in {heavy:.2f} s against {plain:.2f} s without: "
            f"{(heavy - plain) / plan.evaluations * 1e3:.0f} ms more per evaluation (each sends its state back; "
            f"{plan.evaluations - plan.configurations} of the {plan.evaluations} also receive one)"
        )
    finally:
        client.close()
        cluster.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
