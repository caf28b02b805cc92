"""ASHA at scale: what the scheduler costs per evaluation, and how many trial states it keeps.

The ASHA scheduler alone (``hbmagic.scheduler.AshaScheduler``) on R=81,
eta=3 with max_trials = 1,000, 5,000 and 20,000, driven as the runner drives
it by 8 simulated workers whose evaluations end in a random order. For each:

- the scheduler's time per evaluation (next_job, tell and drain together);
- the most trials holding a state at once: those with a finished evaluation
  below the last rung that are neither stopped nor promoted past it (their
  state is what a promotion would continue). ASHA keeps a state until no
  result still to come can promote its trial;
- then one whole search through ``tune`` (no-op objective, executor inline,
  no journal) at max_trials = 5,000: the engine's time per evaluation.

Run: .venv/bin/python benchmarks/asha.py   (about half a minute)
"""

from __future__ import annotations

import random
import time

import hbmagic
from hbmagic.events import TrialStopped
from hbmagic.plan import make_plan
from hbmagic.scheduler import AshaScheduler
from hbmagic.space import Space

R, ETA, WORKERS = 81, 3, 8
SPACE = {"x": "uniform(0, 1)", "y": "loguniform(1e-3, 1)"}


def loss(config: dict, budget: float) -> float:
    return abs(config["x"] - 0.3) + abs(config["y"] - 0.01) + 1.0 / budget


def drive(max_trials: int, seed: int = 0) -> tuple[float, int, int]:
    """Returns (seconds in the scheduler, evaluations, most states kept at once)."""
    plan = make_plan(max_budget=R, eta=ETA, algorithm="asha", max_trials=max_trials)
    scheduler = AshaScheduler(plan, Space(SPACE), seed=seed)
    rng = random.Random(seed)
    running, evaluations, spent = [], 0, 0.0
    holding: set[int] = set()  # trials whose state a promotion would continue
    most = 0
    last = len(plan.brackets[0].rungs) - 1
    while True:
        began = time.perf_counter()
        while len(running) < WORKERS and (job := scheduler.next_job()) is not None:
            running.append(job)
        decisions = scheduler.drain()
        if not running:
            finished = scheduler.finished
            spent += time.perf_counter() - began
            assert finished, "no job and nothing running, yet not finished"
            break
        job = running.pop(rng.randrange(len(running)))
        scheduler.tell(job.trial, job.rung, loss(job.config, job.budget))
        decisions += scheduler.drain()
        spent += time.perf_counter() - began
        evaluations += 1
        if job.rung < last:
            holding.add(job.trial)
        else:
            holding.discard(job.trial)
        for decision in decisions:
            if isinstance(decision, TrialStopped):
                holding.discard(decision.trial)
        most = max(most, len(holding))
    return spent, evaluations, most


def main() -> None:
    print(f"ASHA R={R}, eta={ETA}, {WORKERS} simulated workers\n")
    print("| max_trials | evaluations | scheduler time per evaluation | most states kept at once |")
    print("|---:|---:|---:|---:|")
    for max_trials in (1_000, 5_000, 20_000):
        spent, evaluations, most = drive(max_trials)
        print(f"| {max_trials:,} | {evaluations:,} | {spent / evaluations * 1e6:.0f} us | {most:,} |")
    began = time.perf_counter()
    result = hbmagic.tune(
        lambda trial: trial.config["x"], SPACE, max_budget=R, eta=ETA, algorithm="asha", max_trials=5_000, seed=0
    )
    took = time.perf_counter() - began
    print(
        f"\ntune, max_trials 5,000, no-op objective, inline: {result.evaluations:,} evaluations in {took:.2f} s, "
        f"{took / result.evaluations * 1e6:.0f} us per evaluation"
    )


if __name__ == "__main__":
    main()
