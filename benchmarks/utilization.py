"""Does any worker wait? The real scheduler on W simulated workers, with a virtual clock.

The scheduler (``hbmagic.scheduler.make_scheduler``) decides exactly as in a
search; only the evaluations are simulated. An evaluation takes time
proportional to the resource it trains, ``budget - previous`` (a promoted
trial resumes), times a log-normal noise factor (sigma 0.1 by default) fixed
by the seed, trial and rung. Its metric is a deterministic function of the
configuration and the budget. Whenever a worker is free it asks the scheduler
for a job, as the runner does; when none is ready it waits for the next
evaluation to end.

For each algorithm, K iterations and W workers it reports:

- work / W: the sum of all evaluation times, over W;
- chain: the longest chain of evaluations that must run one after another.
  Hyperband (and successive halving): a rung's decision needs every result of
  the rung before, so a bracket's chain is the sum over its rungs of the
  longest evaluation in each; brackets and iterations do not depend on each
  other, so the chain is the longest bracket's. ASHA has no barrier: an
  evaluation waits only for its own trial's previous rung (a promotion also
  needs enough results at that rung, which this leaves out, so it is a lower
  bound), so the chain is the longest sum of one trial's evaluation times;
- bound = max(work / W, chain), the target's yardstick;
- window bound: a sharper lower bound from the same dependencies (energetic
  reasoning): an evaluation that has h of dependent work before it and q
  after it must run inside [h, T - q], so for every window [a, T - b] the
  part of it that cannot fall outside the window, p - (a - h)+ - (b - q)+,
  must fit with all the others in W x (T - a - b). It bounds any schedule of
  these evaluations, even one that knows every duration in advance;
- makespan and busy fraction (work / (W x makespan)) of the real scheduler,
  and the makespan over each bound;
- the same for a per-bracket-barrier baseline: brackets (and iterations) one
  after another, each rung a barrier, its evaluations longest first on the W
  workers (for ASHA: the evaluations it ran, rung after rung);
- with ``--clairvoyant N``, for each Hyperband row that misses the target: the
  best makespan of N list schedules of the same evaluations that know every
  duration in advance (priorities perturbed at random from "longest remaining
  chain first", the best kept). A reference for what the online scheduler
  leaves on the table, not a bound.

Target: makespan <= 1.1 x bound. Where the window bound is itself above
1.1 x bound no schedule can meet it; the table says so. Hyperband runs R=81,
eta=3 (143 configurations, 1,581 epochs per iteration). ASHA runs the same
rungs (1, 3, 9, 27, 81) with max_trials = K x 143, the configurations of K
Hyperband iterations. Each row is the worst of three noise seeds (by makespan
over bound).

Run: .venv/bin/python benchmarks/utilization.py [--sigma 0.1] [--clairvoyant N]
(a few seconds; about a minute with --clairvoyant 300)
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from hbmagic.plan import Algorithm, make_plan
from hbmagic.scheduler import AshaScheduler, Job, make_scheduler
from hbmagic.space import Space

R, ETA = 81, 3
WORKERS = (1, 4, 16, 64, 256)
ITERATIONS = (1, 5)
SEEDS = (0, 1, 2)
TARGET = 1.1
SPACE = Space({"x": "uniform(0, 1)", "y": "loguniform(1e-3, 1)"})


@dataclass(frozen=True)
class Run:
    workers: int
    work: float
    chain: float
    makespan: float
    barrier: float  # the per-bracket-barrier baseline's makespan
    evaluations: tuple[list[float], list[float], list[float]]  # (duration, head, tail) of each
    groups: dict[tuple, list[float]]  # durations per barrier group: (iteration, -bracket, rung)

    @property
    def window(self) -> float:
        return window_bound(*self.evaluations, self.workers)

    @property
    def bound(self) -> float:
        return max(self.work / self.workers, self.chain)

    @property
    def ratio(self) -> float:
        return self.makespan / self.bound

    @property
    def busy(self) -> float:
        return self.work / (self.workers * self.makespan)

    @property
    def barrier_busy(self) -> float:
        return self.work / (self.workers * self.barrier)


def duration(job: Job, seed: int, sigma: float) -> float:
    """The resource this evaluation trains, times a noise factor fixed by (seed, trial, rung)."""
    noise = random.Random(f"{seed}-{job.trial}-{job.rung}").lognormvariate(0.0, sigma)
    return (job.budget - job.previous) * noise


def metric(job: Job) -> float:
    """A learning curve: better with budget, best near x = 0.3 and y = 0.01."""
    x, y = job.config["x"], job.config["y"]
    return (x - 0.3) ** 2 + 0.1 * math.log10(y / 0.01) ** 2 + 1.0 / job.budget


def longest_first(durations: list[float], workers: int) -> float:
    """Makespan of one barrier-separated group of evaluations, longest first on ``workers``."""
    free = [0.0] * min(workers, len(durations))
    for d in sorted(durations, reverse=True):
        heapq.heapreplace(free, free[0] + d)
    return max(free, default=0.0)


def clairvoyant(groups: dict[tuple, list[float]], workers: int, tries: int, seed: int = 0) -> float:
    """The best makespan found by list schedules that know every duration (synchronous Hyperband's rung barriers).

    A group (iteration, -bracket, rung) is ready when the group below it has
    ended; ready evaluations start by priority. The first try takes the
    longest remaining chain first; later ones perturb the best priorities so far.
    """
    keys = sorted(groups)
    jobs = [(key, d) for key in keys for d in groups[key]]
    longest = {key: max(groups[key]) for key in keys}
    tail = {k: sum(longest[o] for o in keys if o[:2] == k[:2] and o[2] > k[2]) for k in keys}
    members: dict[tuple, list[int]] = defaultdict(list)
    for index, (key, _) in enumerate(jobs):
        members[key].append(index)

    def makespan(priority: list[float]) -> float:
        ready = [(priority[i], i) for key in keys if key[2] == 0 for i in members[key]]
        heapq.heapify(ready)
        left = {key: len(members[key]) for key in keys}
        running: list[tuple[float, int]] = []
        clock, free = 0.0, workers
        while ready or running:
            while free and ready:
                _, i = heapq.heappop(ready)
                heapq.heappush(running, (clock + jobs[i][1], i))
                free -= 1
            clock, i = heapq.heappop(running)
            free += 1
            key = jobs[i][0]
            left[key] -= 1
            above = (*key[:2], key[2] + 1)
            if not left[key] and above in members:
                for j in members[above]:
                    heapq.heappush(ready, (priority[j], j))
        return clock

    rng = random.Random(seed)
    best_priority = [-(tail[key] + d) for key, d in jobs]
    best = makespan(best_priority)
    for _ in range(tries - 1):
        scale = rng.choice((0.05, 0.2, 0.5))
        priority = [p * (1 + rng.gauss(0, scale)) for p in best_priority]
        found = makespan(priority)
        if found < best:
            best, best_priority = found, priority
    return best


def window_bound(p: list[float], head: list[float], tail: list[float], workers: int, points: int = 256) -> float:
    """A lower bound on the makespan T of any schedule of these evaluations (energetic reasoning).

    An evaluation with ``h`` of dependent work before it and ``q`` after it runs
    inside [h, T - q]. For a window [a, T - b] (a + b <= T) at most (a - h)+ of it
    falls before the window and (b - q)+ after, so the window holds at least
    p - (a - h)+ - (b - q)+ of it, and W x (T - a - b) must hold all of that:
    T >= a + b + inside / W. That bound bends where a passes some h or b some
    q, so windows start at heads and end at tails (``points`` of each at most,
    spread by quantile; every window gives a valid bound, fewer only a looser
    one). A window counts once the bound so far shows that T >= a + b; repeated
    until the bound no longer grows.
    """
    p_, h, q = (np.asarray(x, dtype=float) for x in (p, head, tail))

    def edges(x: np.ndarray) -> np.ndarray:
        values = np.unique(np.concatenate([[0.0], x]))
        return values if len(values) <= points else np.unique(np.quantile(values, np.linspace(0, 1, points)))

    starts, ends = edges(h), edges(q)
    implied = np.empty((len(starts), len(ends)))
    for row, a in enumerate(starts):  # one window start at a time: memory stays small
        inside = p_[None, :] - np.clip(a - h, 0, None)[None, :] - np.clip(ends[:, None] - q[None, :], 0, None)
        implied[row] = a + ends + np.clip(inside, 0, None).sum(axis=1) / workers
    width = starts[:, None] + ends[None, :]
    low = max(p_.sum() / workers, float((h + p_ + q).max()))
    while True:
        grown = float(implied[width <= low + 1e-9].max(initial=low))
        if grown <= low + 1e-9:
            return low
        low = grown


class CreateFirstAsha(AshaScheduler):
    """ASHA that starts a new trial whenever it may, and promotes only once all ``max_trials`` exist.

    Not hbmagic's ASHA (which, as the paper's, promotes first): measured beside it
    with ``--asha-create-first``, since with ``max_trials`` it ends sooner in most rows.
    """

    def next_job(self) -> Job | None:
        if self._pending or self._exhausted:
            return super().next_job()
        return self._job(len(self._created), 0, self.bracket, 0)


def simulate(algorithm: str, iterations: int, workers: int, seed: int, sigma: float, create_first=False) -> Run:
    if algorithm == "asha":
        plan = make_plan(max_budget=R, eta=ETA, algorithm="asha", max_trials=iterations * _configurations())
    else:
        plan = make_plan(max_budget=R, eta=ETA, algorithm=algorithm, iterations=iterations)
    if create_first and algorithm == "asha":
        scheduler = CreateFirstAsha(plan, SPACE, seed=seed)
    else:
        scheduler = make_scheduler(plan, SPACE, seed=seed)
    clock, idle, order = 0.0, workers, 0
    running: list[tuple[float, int, Job]] = []
    took: dict[tuple[int, int], float] = {}
    jobs: dict[tuple[int, int], Job] = {}
    while True:
        while idle:
            job = scheduler.next_job()
            if job is None:
                break
            took[(job.trial, job.rung)] = d = duration(job, seed, sigma)
            jobs[(job.trial, job.rung)] = job
            heapq.heappush(running, (clock + d, order, job))
            order, idle = order + 1, idle - 1
        scheduler.drain()
        if not running:
            if not scheduler.finished:
                raise RuntimeError("the scheduler has no job and nothing runs, yet it is not finished")
            break
        clock, _, job = heapq.heappop(running)
        idle += 1
        scheduler.tell(job.trial, job.rung, metric(job))
    groups: dict[tuple, list[float]] = defaultdict(list)  # barrier groups: (iteration, bracket, rung)
    for key, job in jobs.items():
        groups[(job.iteration, -job.bracket, job.rung)].append(took[key])
    barrier = sum(longest_first(group, workers) for group in groups.values())
    keys = list(jobs)
    head, tail = _dependencies(plan.algorithm, jobs, took)
    p = [took[k] for k in keys]
    heads, tails = [head[k] for k in keys], [tail[k] for k in keys]
    chain = max(h + d + q for h, d, q in zip(heads, p, tails, strict=True))
    return Run(workers, sum(p), chain, clock, barrier, (p, heads, tails), dict(groups))


def _dependencies(
    algorithm: Algorithm, jobs: dict[tuple[int, int], Job], took: dict[tuple[int, int], float]
) -> tuple[dict[tuple[int, int], float], dict[tuple[int, int], float]]:
    """For each evaluation, the longest chain of evaluations that must end before it and after it."""
    if algorithm is Algorithm.ASHA:  # one trial's rungs, one after another
        own: dict[int, dict[int, float]] = defaultdict(dict)
        for (trial, rung), d in took.items():
            own[trial][rung] = d
        head = {k: sum(d for r, d in own[k[0]].items() if r < k[1]) for k in jobs}
        tail = {k: sum(d for r, d in own[k[0]].items() if r > k[1]) for k in jobs}
        return head, tail
    longest: dict[tuple[int, int, int], float] = defaultdict(float)  # (iteration, bracket, rung) -> longest
    for key, job in jobs.items():
        rung = (job.iteration, job.bracket, job.rung)
        longest[rung] = max(longest[rung], took[key])

    def rungs(job: Job, which) -> float:
        return sum(d for (i, s, r), d in longest.items() if i == job.iteration and s == job.bracket and which(r))

    head = {k: rungs(j, lambda r, j=j: r < j.rung) for k, j in jobs.items()}
    tail = {k: rungs(j, lambda r, j=j: r > j.rung) for k, j in jobs.items()}
    return head, tail


def _configurations() -> int:
    return make_plan(max_budget=R, eta=ETA).configurations


def table(sigma: float, create_first: bool = False) -> tuple[list[str], dict[str, int], list[tuple[int, Run]]]:
    lines = [
        "| algorithm | K | W | work / W | chain | bound | window bound | makespan | / bound | / window "
        "| busy | barrier makespan | barrier busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    tally = {"met": 0, "unattainable": 0, "missed": 0}
    misses: list[tuple[int, Run]] = []  # Hyperband rows that miss: (K, the worst seed's run)
    for algorithm in ("hyperband", "asha"):
        for iterations in ITERATIONS:
            for workers in WORKERS:
                runs = [simulate(algorithm, iterations, workers, seed, sigma, create_first) for seed in SEEDS]
                run = max(runs, key=lambda r: r.ratio)  # the worst seed
                window = run.window
                if run.ratio <= TARGET:
                    verdict = "met"
                elif window > TARGET * run.bound:
                    verdict = "unattainable"
                else:
                    verdict = "missed"
                tally[verdict] += 1
                if verdict != "met" and algorithm == "hyperband":
                    misses.append((iterations, run))
                mark = {"met": "", "unattainable": " (u)", "missed": " (m)"}[verdict]
                lines.append(
                    f"| {algorithm} | {iterations} | {workers} | {run.work / workers:,.1f} | {run.chain:,.1f} | "
                    f"{run.bound:,.1f} | {window:,.1f} | {run.makespan:,.1f} | {run.ratio:.3f}{mark} | "
                    f"{run.makespan / window:.3f} | {run.busy:.1%} | {run.barrier:,.1f} | {run.barrier_busy:.1%} |"
                )
    return lines, tally, misses


def clairvoyant_table(misses: list[tuple[int, Run]], tries: int) -> list[str]:
    lines = [
        "| K | W | bound | window bound | hbmagic | clairvoyant best found | / bound |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for iterations, run in misses:
        best = clairvoyant(run.groups, run.workers, tries)
        lines.append(
            f"| {iterations} | {run.workers} | {run.bound:,.1f} | {run.window:,.1f} | {run.makespan:,.1f} | "
            f"{best:,.1f} | {best / run.bound:.3f} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", type=float, default=0.1, help="log-normal noise of evaluation times (0.1)")
    parser.add_argument(
        "--clairvoyant", type=int, default=0, metavar="N", help="try N duration-knowing schedules per missed row"
    )
    parser.add_argument(
        "--asha-create-first", action="store_true", help="ASHA rows: create every trial before promoting any"
    )
    args = parser.parse_args()
    lines, tally, misses = table(args.sigma, args.asha_create_first)
    print(f"noise sigma {args.sigma}; R={R}, eta={ETA}; worst of seeds {', '.join(map(str, SEEDS))}\n")
    print("\n".join(lines))
    print(
        f"\ntarget makespan <= {TARGET} x max(work / W, chain): met in {tally['met']} rows; "
        f"(u) unattainable by any schedule in {tally['unattainable']} (the window bound is above the target); "
        f"(m) missed in {tally['missed']}"
    )
    if args.clairvoyant and misses:
        print(f"\nHyperband rows that miss, against {args.clairvoyant} list schedules that know every duration:\n")
        print("\n".join(clairvoyant_table(misses, args.clairvoyant)))
    return 0 if tally["missed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
