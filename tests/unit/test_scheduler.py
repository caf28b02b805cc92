"""The scheduler alone: results in, decisions out, never a clock or a thread."""

import math
import random

import pytest

from hbmagic.events import BracketDone, RungDone, TrialCreated, TrialPromoted, TrialStopped
from hbmagic.plan import make_plan
from hbmagic.scheduler import AshaScheduler, SyncScheduler, make_scheduler, rank
from hbmagic.space import Space

SPACE = Space({"x": "uniform(0, 1)"})


def loss(job):
    """A deterministic metric: the configuration's distance to 0.3, shrinking with budget."""
    return abs(job.config["x"] - 0.3) + 1.0 / job.budget


def run_all(scheduler, order_seed=None, value=loss):
    """Run the whole search, completing ready jobs in a shuffled order; returns (decisions, jobs)."""
    rng = random.Random(order_seed)
    running, decisions, jobs = [], [], []
    while not scheduler.finished:
        while (job := scheduler.next_job()) is not None:
            running.append(job)
            jobs.append(job)
        decisions += scheduler.drain()
        if order_seed is not None:
            rng.shuffle(running)
        job = running.pop(0)
        scheduler.tell(job.trial, job.rung, value(job))
        decisions += scheduler.drain()
    return decisions, jobs


def test_sync_hyperband_runs_the_plan():
    plan = make_plan(max_budget=81, eta=3)
    decisions, jobs = run_all(SyncScheduler(plan, SPACE, seed=1))
    assert len(jobs) == 206
    assert len({j.trial for j in jobs}) == 143
    assert sum(j.budget - j.previous for j in jobs) == 1581
    assert sum(isinstance(d, TrialCreated) for d in decisions) == 143
    assert sum(isinstance(d, BracketDone) for d in decisions) == 5
    promoted = sum(isinstance(d, TrialPromoted) for d in decisions)
    assert promoted == 206 - 143


def test_decisions_do_not_depend_on_completion_order():
    plan = make_plan(max_budget=27, eta=3, iterations=2)
    reference, _ = run_all(SyncScheduler(plan, SPACE, seed=5), order_seed=None)
    for order in range(4):
        decisions, _ = run_all(SyncScheduler(plan, SPACE, seed=5), order_seed=order)
        assert sorted(map(repr, decisions)) == sorted(map(repr, reference))


def test_brackets_and_iterations_run_concurrently():
    plan = make_plan(max_budget=81, eta=3, iterations=2)
    scheduler = SyncScheduler(plan, SPACE, seed=0)
    first = []
    while (job := scheduler.next_job()) is not None:
        first.append(job)
    # Every bracket of every iteration offers its first rung at once: no barrier between brackets.
    assert len(first) == 2 * 143
    assert {(j.iteration, j.bracket) for j in first} == {(i, s) for i in range(2) for s in range(5)}
    # Finishing the first rung of one bracket promotes at once, while all other brackets still run.
    for job in (j for j in first if j.iteration == 0 and j.bracket == 4):
        scheduler.tell(job.trial, job.rung, loss(job))
    nxt = scheduler.next_job()
    assert nxt is not None and (nxt.iteration, nxt.bracket, nxt.rung) == (0, 4, 1)


def test_ready_jobs_with_the_longest_tail_go_first():
    # R=9: bracket s=2 (9 x 1, 3 x 3, 1 x 9) has 8 units left after its first rung, s=1 (5 x 3, 1 x 9)
    # 6, s=0 (3 x 9) none, though its jobs are long (3/4 of 9 = 6.75 ranks above s=1's tail of 6).
    scheduler = SyncScheduler(make_plan(max_budget=9, eta=3, iterations=2), SPACE, seed=0)
    order = [(job.iteration, job.bracket) for job in iter(scheduler.next_job, None)]
    assert order[:18] == [(0, 2)] * 9 + [(1, 2)] * 9
    assert order[18:24] == [(0, 0)] * 3 + [(1, 0)] * 3
    assert order[24:] == [(0, 1)] * 5 + [(1, 1)] * 5


def test_nan_inf_and_failures_are_never_promoted():
    plan = make_plan(max_budget=9, eta=3, brackets=1)  # 9 x 1, 3 x 3, 1 x 9
    scheduler = SyncScheduler(plan, SPACE, seed=0)
    jobs = [scheduler.next_job() for _ in range(9)]
    values = [math.nan, math.inf, -math.inf, None, None, None, None, None, 0.5]
    for job, value in zip(jobs, values, strict=True):
        scheduler.tell(job.trial, job.rung, value)
    decisions = scheduler.drain()
    promoted = [d.trial for d in decisions if isinstance(d, TrialPromoted)]
    assert promoted == [jobs[8].trial]
    stopped = {d.trial: d for d in decisions if isinstance(d, TrialStopped)}
    assert set(stopped) == {jobs[0].trial, jobs[1].trial, jobs[2].trial}  # failed ones are failed, not stopped
    assert stopped[jobs[0].trial].cutoff == 0.5 and stopped[jobs[0].trial].of == 9


def test_a_rung_with_nothing_good_ends_its_bracket():
    scheduler = SyncScheduler(make_plan(max_budget=9, eta=3, brackets=1), SPACE, seed=0)
    for job in [scheduler.next_job() for _ in range(9)]:
        scheduler.tell(job.trial, job.rung, None)
    decisions = scheduler.drain()
    assert isinstance(decisions[-1], BracketDone) and decisions[-1].best is None
    assert scheduler.finished


def test_ties_break_by_trial_id_and_mode_max_flips_the_order():
    results = {5: 1.0, 2: 1.0, 9: 0.5, 1: math.nan}
    assert rank(results, "min") == [9, 2, 5, 1]
    assert rank(results, "max") == [2, 5, 9, 1]


def test_trials_are_plan_ordinals_with_seeded_configs():
    plan = make_plan(max_budget=27, eta=3)
    a, _ = run_all(SyncScheduler(plan, SPACE, seed=3))
    b, _ = run_all(SyncScheduler(plan, SPACE, seed=3), order_seed=9)
    created_a = {d.trial: (d.config, d.seed, d.bracket) for d in a if isinstance(d, TrialCreated)}
    created_b = {d.trial: (d.config, d.seed, d.bracket) for d in b if isinstance(d, TrialCreated)}
    assert created_a == created_b
    assert sorted(created_a) == list(range(plan.configurations))
    assert [created_a[t][2] for t in sorted(created_a)][:27] == [3] * 27  # bracket s=3 first, in plan order


@pytest.mark.parametrize("algorithm", ["hyperband", "asha"])
def test_state_round_trip_continues_identically(algorithm):
    plan = make_plan(max_budget=27, eta=3, algorithm=algorithm, max_trials=40 if algorithm == "asha" else None)
    original = make_scheduler(plan, SPACE, seed=2)
    rng = random.Random(4)
    running = []
    for _ in range(30):  # part of the search, with some evaluations left running
        while (job := original.next_job()) is not None and len(running) < 4:
            running.append(job)
        if job is not None:
            original.release(job.trial, job.rung)
        rng.shuffle(running)
        done = running.pop()
        original.tell(done.trial, done.rung, loss(done))
    original.drain()
    for job in running:  # an interrupt: running evaluations come back
        original.release(job.trial, job.rung)
    state = original.get_state()
    restored = make_scheduler(plan, SPACE, seed=2)
    restored.set_state(state)
    restored.drain()  # the decisions already made, recomputed
    assert restored.get_state() == state
    rest_a, jobs_a = run_all(original)
    rest_b, jobs_b = run_all(restored)
    assert sorted((j.trial, j.rung) for j in jobs_a) == sorted((j.trial, j.rung) for j in jobs_b)
    assert sorted(map(identity, rest_a)) == sorted(map(identity, rest_b))


def identity(decision):
    """A decision without the rank an early stop had when it was made (ASHA: that depends on arrival order)."""
    if isinstance(decision, TrialStopped):
        return repr((decision.trial, decision.rung, decision.value))
    return repr(decision)


def test_set_state_rejects_results_the_plan_never_runs():
    scheduler = SyncScheduler(make_plan(max_budget=9, eta=3), SPACE, seed=0)
    with pytest.raises(ValueError, match="never runs"):
        scheduler.set_state({"results": [[0, 2, 0.1]], "created": [0]})


def test_asha_promotes_the_top_third_so_far():
    plan = make_plan(max_budget=9, eta=3, algorithm="asha", max_trials=30)
    scheduler = AshaScheduler(plan, SPACE, seed=0)
    jobs = [scheduler.next_job() for _ in range(3)]
    assert [j.rung for j in jobs] == [0, 0, 0]
    for job, value in zip(jobs, [0.3, 0.1, 0.2], strict=True):
        scheduler.tell(job.trial, job.rung, value)
    promoted = scheduler.next_job()
    assert (promoted.trial, promoted.rung, promoted.budget) == (jobs[1].trial, 1, 3)
    assert scheduler.drain()[-1] == TrialPromoted(jobs[1].trial, 1, 3, 1)
    assert scheduler.next_job().rung == 0  # nothing else is in the top third: a new trial


def test_asha_stops_at_max_trials_and_decides_the_rest():
    plan = make_plan(max_budget=9, eta=3, algorithm="asha", max_trials=20)
    decisions, jobs = run_all(AshaScheduler(plan, SPACE, seed=1), order_seed=3)
    assert len({j.trial for j in jobs}) == 20
    assert any(j.rung == 2 for j in jobs)
    stopped = {d.trial for d in decisions if isinstance(d, TrialStopped)}
    finished = {j.trial for j in jobs if j.rung == 2}
    assert stopped | finished == {j.trial for j in jobs}
    assert isinstance(decisions[-1], BracketDone)


class AshaStoppingAtTheEnd(AshaScheduler):
    """ASHA as it was: every trial that was not promoted is stopped when the search ends."""

    def _stop_hopeless(self, new=None):
        pass


def noisy_loss(job):
    """``loss`` with noise; now and then NaN or a failure."""
    rng = random.Random(f"{job.trial}-{job.rung}")
    if rng.random() < 0.05:
        return None if rng.random() < 0.5 else math.nan
    return loss(job) + rng.gauss(0, 0.2)


@pytest.mark.parametrize(("max_trials", "max_budget"), [(40, 27), (143, 81), (600, 81)])
def test_asha_stops_a_trial_as_soon_as_no_result_to_come_can_promote_it(max_trials, max_budget):
    plan = make_plan(max_budget=max_budget, eta=3, algorithm="asha", max_trials=max_trials)
    for order in range(3):
        early, jobs = run_all(AshaScheduler(plan, SPACE, seed=1), order_seed=order, value=noisy_loss)
        late, late_jobs = run_all(AshaStoppingAtTheEnd(plan, SPACE, seed=1), order_seed=order, value=noisy_loss)
        # The same evaluations in the same order: stopping early changes no promotion.
        assert [(j.trial, j.rung) for j in jobs] == [(j.trial, j.rung) for j in late_jobs]
        stops = [d.trial for d in early if isinstance(d, TrialStopped)]
        assert len(stops) == len(set(stops))  # once each
        assert set(stops) == {d.trial for d in late if isinstance(d, TrialStopped)}
        # Most are stopped long before the end, and none is promoted after its stop.
        end = next(i for i, d in enumerate(early) if isinstance(d, BracketDone))
        before_end = [i for i, d in enumerate(early[:end]) if isinstance(d, TrialStopped)]
        assert len(before_end) > 0.8 * len(stops)
        for i in before_end:
            stop = early[i]
            assert not any(isinstance(d, TrialPromoted) and d.trial == stop.trial for d in early[i:])
            assert stop.cutoff is None or stop.value is None or not stop.value < stop.cutoff


def test_asha_without_max_trials_stops_no_trial_early():
    plan = make_plan(max_budget=9, eta=3, algorithm="asha")  # a time limit ends it
    scheduler = AshaScheduler(plan, SPACE, seed=0)
    for _ in range(30):
        job = scheduler.next_job()
        scheduler.tell(job.trial, job.rung, loss(job))
    assert not any(isinstance(d, TrialStopped) for d in scheduler.drain())


def test_rung_done_reports_promotions_and_cutoff():
    scheduler = SyncScheduler(make_plan(max_budget=3, eta=3, brackets=1), SPACE, seed=0)
    jobs = [scheduler.next_job() for _ in range(3)]
    for job, value in zip(jobs, [3.0, 1.0, 2.0], strict=True):
        scheduler.tell(job.trial, job.rung, value)
    done = [d for d in scheduler.drain() if isinstance(d, RungDone)]
    assert done == [RungDone(0, 1, 0, (jobs[1].trial,), 1.0)]
