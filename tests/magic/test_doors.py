"""One behaviour, two doors: each engine behaviour the magic exposes, checked through ``tune`` and ``%%hyperband``.

Every test body runs twice: ``door.search(train, space, **options)`` calls
``hbmagic.tune`` ("func") or runs a ``%%hyperband`` cell in the real IPython
shell ("magic") whose body calls the same ``train``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from IPython.core.error import UsageError

import hbmagic
from hbmagic import EndReason, EvalStatus, SearchFailed
from hbmagic.errors import USER_ERRORS
from hbmagic.plan import make_plan
from hbmagic.space import Space

SPACE = {"lr": "loguniform(1e-3, 1e-1)", "units": "randint(8, 64)"}


@dataclass
class Outcome:
    result: Any  # the Result (partial when the search stopped), None when nothing ran
    error: str | None  # the error shown to the user
    output: str  # what the search printed


class Door:
    def __init__(self, kind: str, ip, capsys):
        self.kind, self.ip, self.capsys = kind, ip, capsys

    def search(self, train, space: dict[str, str], **options: Any) -> Outcome:
        """Search ``train(trial, **config)`` over ``space``; what comes back, through this door."""
        self.capsys.readouterr()
        if self.kind == "func":
            result, error = self._tune(train, space, options)
        else:
            result, error = self._magic(train, space, options)
        return Outcome(result, error, self.capsys.readouterr().out)

    def _tune(self, train, space, options):
        try:
            objective = lambda trial: train(trial, **trial.config)  # noqa: E731 - the objective under test
            return hbmagic.tune(objective, space, storage=os.environ["HBMAGIC_DIR"], **options), None
        except SearchFailed as err:
            return err.result, str(err)
        except USER_ERRORS as err:
            return None, str(err)

    def _magic(self, train, space, options):
        ns = self.ip.user_ns
        ns["door_train"] = train
        ns.pop("door_result", None)
        flags = ["-o door_result", "--no-widget"]
        for name, value in options.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                flags.append(flag)
            elif value is not None and value is not False:
                flags.append(f"{flag} {value}")
        header = "".join(f"#| {name}: {dist}\n" for name, dist in space.items())
        call = ", ".join(f"{name}={name}" for name in space)
        try:
            self.ip.run_cell_magic("hyperband", " ".join(flags), f"{header}door_train(trial, {call})\n")
            error = None
        except UsageError as err:
            error = str(err)
        return ns.get("door_result"), error


@pytest.fixture(params=["func", "magic"])
def door(request, ip, capsys):
    return Door(request.param, ip, capsys)


class Trainer:
    """Trains from ``trial.start`` to ``trial.budget`` through ``trial.state``, counting what it trained."""

    def __init__(self, fail=None, interrupt_at=None, sleep=0.0):
        self.calls = 0
        self.trained = 0
        self.lock = threading.Lock()
        self.fail, self.interrupt_at, self.sleep = fail, interrupt_at, sleep

    def __call__(self, trial, lr, units):
        with self.lock:
            self.calls += 1
            calls = self.calls
        if self.interrupt_at is not None and calls == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        if self.fail is not None and self.fail(trial):
            raise ValueError("this trial cannot train")
        state = trial.state
        if not state:
            state["epochs"] = 0
        assert state["epochs"] == trial.start
        for _ in range(int(trial.start), int(trial.budget)):
            state["epochs"] += 1
            with self.lock:
                self.trained += 1
            time.sleep(self.sleep)
            trial.report(loss=abs(lr - 0.01) * 100 + 10 / state["epochs"] + units / 1000)
        print(f"trial {trial.id} reached {state['epochs']}")


def test_the_plan_runs_and_promoted_trials_resume_from_their_state(door):
    train = Trainer()
    outcome = door.search(train, SPACE, max_budget=9, seed=3)
    plan = make_plan(max_budget=9)
    result = outcome.result
    assert outcome.error is None
    assert result.reason is EndReason.COMPLETED
    assert result.evaluations == train.calls == plan.evaluations
    assert train.trained == plan.resource  # resumed, never retrained
    assert outcome.output.splitlines()[0].startswith("new study ")
    top = [t for t in result.trials.values() if t.budget == 9]
    assert result.best.value == min(t.value for t in top)
    assert result.best.config == min(top, key=lambda t: t.value).config


def test_the_seed_fixes_every_trials_configuration(door):
    result = door.search(Trainer(), SPACE, max_budget=9, seed=11).result
    space = Space(SPACE)
    assert {t.id: t.config for t in result.trials.values()} == {i: space.config(11, i) for i in result.trials}


def test_threads_give_the_same_trials_and_best_as_inline(door):
    inline = door.search(Trainer(), SPACE, max_budget=9, seed=4, study="inline").result
    threads = door.search(Trainer(), SPACE, max_budget=9, seed=4, executor="threads", workers=3, study="threads").result
    assert {t.id: (t.config, t.value) for t in threads.trials.values()} == {
        t.id: (t.config, t.value) for t in inline.trials.values()
    }
    assert threads.best == inline.best


def test_metric_and_mode_choose_what_is_optimized(door):
    def train(trial, x):
        trial.report(loss=x, acc=1 - x)

    outcome = door.search(train, {"x": "uniform(0, 1)"}, max_budget=3, metric="acc", mode="max", seed=2)
    result = outcome.result
    assert result.metric == "acc"
    best = max((t for t in result.trials.values() if t.budget == 3), key=lambda t: t.value)
    assert result.best.trial == best.id
    assert result.best.value == pytest.approx(1 - best.config["x"])
    assert "maximized acc" in result.summary()


def test_several_metrics_without_metric_are_refused_with_their_names(door):
    def train(trial, x):
        trial.report(loss=x, acc=1 - x)

    outcome = door.search(train, {"x": "uniform(0, 1)"}, max_budget=3, seed=2)
    assert "several metrics (loss, acc)" in outcome.error
    assert "metric" in outcome.error


def test_a_body_failing_on_every_evaluation_stops_early_with_its_error_once(door):
    train = Trainer(fail=lambda trial: True)
    outcome = door.search(train, SPACE, max_budget=9, seed=1)
    assert train.calls == 3
    assert outcome.error.count("ValueError: this trial cannot train") == 1
    assert "first 3 evaluations all failed" in outcome.error
    assert outcome.result.failures == 3
    assert "cannot train" not in outcome.output


def test_max_failures_stops_the_search(door):
    train = Trainer(fail=lambda trial: trial.id % 3 == 0)
    outcome = door.search(train, SPACE, max_budget=9, seed=1, max_failures=2)
    assert "stopped after 2 failed evaluations" in outcome.error
    assert outcome.result.failures == 2
    assert outcome.result.evaluations < make_plan(max_budget=9).evaluations


def test_a_failing_trial_keeps_its_error_and_the_search_goes_on(door):
    train = Trainer(fail=lambda trial: trial.id == 2)
    result = door.search(train, SPACE, max_budget=9, seed=1).result
    assert result.reason is EndReason.COMPLETED
    assert "ValueError: this trial cannot train" in result.trials[2].error
    assert all(t.error is None for t in result.trials.values() if t.id != 2)
    assert result.failures == 1


@pytest.mark.parametrize(
    ("options", "space", "words"),
    [
        ({"max_budget": 9, "eta": 1}, SPACE, ["eta", "1", ">= 2"]),
        ({"max_budget": 9, "algorithm": "asha"}, SPACE, ["asha needs a stopping rule", "max-trials|max_trials"]),
        ({"max_budget": 9}, {"lr": "loguniform(0, 1)"}, ["loguniform", "low is 0", "> 0"]),
        ({"max_budget": 9}, {"lr": "logunifrm(1e-3, 1)"}, ["did you mean 'loguniform'"]),
        ({"max_budget": 9}, {"n": "randint(1.5, 4)"}, ["randint", "integer"]),
    ],
)
def test_a_mistake_is_refused_before_anything_runs(door, options, space, words):
    train = Trainer()
    outcome = door.search(train, space, **options)
    assert outcome.result is None
    assert train.calls == 0
    for word in words:
        assert any(w in outcome.error for w in word.split("|")), outcome.error


def test_prints_are_kept_per_trial_not_shown(door):
    outcome = door.search(Trainer(), SPACE, max_budget=3, seed=1)
    assert "reached" not in outcome.output
    for trial in outcome.result.trials.values():
        assert f"trial {trial.id} reached" in trial.output


def test_an_interrupt_keeps_the_partial_result_and_the_same_search_resumes(door):
    first = Trainer(interrupt_at=5)
    stopped = door.search(first, SPACE, max_budget=9, seed=6)
    result = stopped.result
    assert stopped.error is None
    assert result.reason is EndReason.INTERRUPTED
    assert "run again to resume" in result.message
    assert result.evaluations == 4
    assert any(e.status is EvalStatus.INTERRUPTED for t in result.trials.values() for e in t.evaluations)

    second = Trainer()
    resumed = door.search(second, SPACE, max_budget=9, seed=6)
    plan = make_plan(max_budget=9)
    assert resumed.output.splitlines()[0].startswith(f"resuming: 4 of {plan.evaluations} evaluations reused")
    assert resumed.result.reason is EndReason.COMPLETED
    assert second.calls == plan.evaluations - 4
    assert resumed.result.evaluations == plan.evaluations


def test_a_finished_search_run_again_reuses_everything_and_new_starts_afresh(door):
    plan = make_plan(max_budget=3)
    door.search(Trainer(), SPACE, max_budget=3, seed=8)
    again = Trainer()
    outcome = door.search(again, SPACE, max_budget=3, seed=8)
    assert outcome.output.startswith(f"resuming: {plan.evaluations} of {plan.evaluations} evaluations reused")
    assert again.calls == 0
    assert outcome.result.evaluations == plan.evaluations
    fresh = Trainer()
    outcome = door.search(fresh, SPACE, max_budget=3, seed=8, new=True)
    assert outcome.output.startswith("new study ")
    assert fresh.calls == plan.evaluations


def test_a_changed_space_or_plan_is_a_new_study(door):
    door.search(Trainer(), SPACE, max_budget=3, seed=8)
    other_space = door.search(Trainer(), {**SPACE, "units": "randint(8, 32)"}, max_budget=3, seed=8)
    assert other_space.output.startswith("new study ")
    other_plan = door.search(Trainer(), SPACE, max_budget=3, eta=2, seed=8)
    assert other_plan.output.startswith("new study ")


def test_the_time_limit_stops_the_search(door):
    outcome = door.search(Trainer(sleep=0.02), SPACE, max_budget=27, seed=1, time_limit=0.5)
    assert outcome.result.reason is EndReason.TIME_LIMIT
    assert outcome.result.evaluations < make_plan(max_budget=27).evaluations


def test_a_trial_timeout_fails_the_slow_evaluation(door):
    def train(trial, x):
        for _ in range(int(trial.budget)):
            time.sleep(0.5 if trial.id == 0 else 0)
            trial.report(x)

    result = door.search(train, {"x": "uniform(0, 1)"}, max_budget=3, seed=1, trial_timeout=0.3).result
    assert "timed out" in result.trials[0].error
    assert result.reason is EndReason.COMPLETED
