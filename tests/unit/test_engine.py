"""The engine through ``tune``: what an objective sees, and what the search does with it."""

import gc
import math
import os
import signal
import threading
import time
import weakref

import pytest

import hbmagic
from hbmagic import EndReason, SearchFailed, Stopped, TrialStatus, tune
from hbmagic.events import (
    EvaluationEnded,
    EvaluationStarted,
    Reported,
    StudyEnded,
    StudyStarted,
    TrialCreated,
    TrialPromoted,
    TrialStopped,
    event_from_dict,
    event_to_dict,
)

SPACE = {"lr": "loguniform(1e-3, 1e-1)", "units": "randint(8, 64)"}
EXECUTORS = [{"executor": "inline"}, {"executor": "threads", "workers": 3}]


class Counter:
    """An objective that trains from trial.start to trial.budget and counts what it trained."""

    def __init__(self):
        self.calls = 0
        self.units = 0
        self.trials = set()
        self.lock = threading.Lock()

    def __call__(self, trial):
        with self.lock:
            self.calls += 1
            self.trials.add(trial.id)
        state = trial.state
        if not state:
            assert trial.start == 0
            state["epochs"] = 0
        assert state["epochs"] == trial.start
        for _ in range(int(trial.start), int(trial.budget)):
            state["epochs"] += 1
            with self.lock:
                self.units += 1
        trial.report(val_error=abs(math.log10(trial.config["lr"]) + 2) + 1 / trial.budget)


@pytest.mark.parametrize("options", EXECUTORS, ids=["inline", "threads"])
def test_counted_not_computed(options):
    counter = Counter()
    result = tune(counter, SPACE, max_budget=81, eta=3, seed=0, **options)
    assert len(counter.trials) == 143
    assert counter.calls == 206
    assert counter.units == 1581
    assert result.evaluations == 206 and len(result.trials) == 143
    assert result.reason is EndReason.COMPLETED


def test_same_trials_and_best_with_inline_and_threads():
    a = tune(Counter(), SPACE, max_budget=27, seed=4, executor="inline")
    b = tune(Counter(), SPACE, max_budget=27, seed=4, executor="threads", workers=4)
    assert a.best == b.best
    assert {t.id: (t.config, t.status, t.budget) for t in a.trials.values()} == {
        t.id: (t.config, t.status, t.budget) for t in b.trials.values()
    }


def test_every_event_reaches_observers_and_serializes():
    seen = []
    tune(Counter(), SPACE, max_budget=9, seed=1, observers=[seen.append])
    kinds = {type(e) for e in seen}
    assert {
        StudyStarted,
        TrialCreated,
        EvaluationStarted,
        Reported,
        EvaluationEnded,
        TrialPromoted,
        TrialStopped,
    } <= kinds
    assert isinstance(seen[0], StudyStarted) and isinstance(seen[-1], StudyEnded)
    assert all(e.at > 0 for e in seen)
    for event in seen:
        assert event_from_dict(event_to_dict(event)) == event


def test_an_observer_that_breaks_is_removed_and_the_search_goes_on():
    def broken(event):
        raise RuntimeError("display gone")

    with pytest.warns(UserWarning, match="display gone"):
        result = tune(Counter(), SPACE, max_budget=9, seed=1, observers=[broken])
    assert result.complete


def test_trial_contract_seed_device_steps():
    seen = {}

    def objective(trial):
        seen.setdefault(trial.id, []).append((trial.seed, trial.device, trial.start, trial.budget, trial.rung))
        for _ in range(int(trial.start), int(trial.budget)):
            trial.report(trial.config["lr"])

    result = tune(objective, SPACE, max_budget=9, seed=11, metric="loss")
    again = {}

    def record(trial):
        again[trial.id] = trial.seed
        trial.report(1.0)

    tune(record, SPACE, max_budget=9, seed=11, executor="threads", workers=2)
    assert {t: calls[0][0] for t, calls in seen.items()} == again
    assert all(device == "cpu" for calls in seen.values() for _, device, *_ in calls)
    # One report per resource unit: steps run from start + 1 to budget, so the curve is unbroken.
    promoted = next(t for t in result.trials.values() if len(t.evaluations) == 3)
    assert sorted(promoted.metrics) == list(range(1, 10))
    assert result.metric == "loss"


def test_trial_state_is_freed_once_the_trial_is_stopped():
    class Model:
        pass

    refs = {}
    alive_later = []

    def objective(trial):
        if not trial.state:
            trial.state["model"] = Model()
            refs[trial.id] = weakref.ref(trial.state["model"])
        gc.collect()
        alive_later.append(sum(ref() is not None for ref in refs.values()))
        trial.report(trial.config["lr"])

    result = tune(objective, SPACE, max_budget=9, eta=3, brackets=1, seed=2)
    # 9 trials at rung 0; once the rung is decided only the 3 promoted keep a state.
    assert alive_later[8] == 9 and alive_later[9] <= 3
    gc.collect()
    assert all(ref() is None for ref in refs.values())
    assert result.complete


def test_report_converts_numbers_and_names_a_bad_metric():
    def objective(trial):
        trial.report(acc="high")

    with pytest.raises(SearchFailed) as info:
        tune(objective, SPACE, max_budget=9, seed=0)
    assert "metric 'acc' is 'high' (str), which is not a number" in str(info.value)


def test_several_metrics_need_metric_and_the_error_lists_them():
    def objective(trial):
        trial.report(loss=1.0, acc=0.5)

    with pytest.raises(hbmagic.MetricNameError, match="several metrics \\(loss, acc\\)") as info:
        tune(objective, SPACE, max_budget=9, seed=0)
    assert info.value.names == ("loss", "acc")
    result = tune(objective, SPACE, max_budget=9, seed=0, metric="acc", mode="max")
    assert result.best.metric == "acc" and "maximized acc" in result.summary()


def test_returned_value_is_the_metric_when_nothing_is_reported_and_min_is_default():
    result = tune(lambda trial: trial.config["lr"], SPACE, max_budget=9, seed=3)
    best = result.best
    finals = [t.value for t in result.trials.values() if t.budget == 9]
    assert best.value == min(finals)
    assert "minimized value" in result.summary()


def test_nan_and_infinite_results_rank_worst():
    def objective(trial):
        return math.nan if trial.id % 2 else (math.inf if trial.id % 3 == 0 else trial.config["lr"])

    result = tune(objective, SPACE, max_budget=9, seed=3, brackets=1)
    assert math.isfinite(result.best.value)
    promoted = [t for t in result.trials.values() if t.rung > 0]
    assert all(math.isfinite(t.evaluations[0].value) for t in promoted)


def test_a_failing_trial_keeps_its_traceback_and_the_search_goes_on():
    def objective(trial):
        if trial.id in (4, 7):
            raise ValueError(f"diverged at lr={trial.config['lr']:.3g}")
        return trial.config["lr"]

    result = tune(objective, SPACE, max_budget=9, seed=3)
    failed = [t for t in result.trials.values() if t.status is TrialStatus.FAILED]
    assert [t.id for t in failed] == [4, 7]
    assert "Traceback" in failed[0].error and "ValueError: diverged" in failed[0].error
    assert "in objective" in failed[0].error and "hbmagic" not in failed[0].error.split("objective")[0]
    assert result.complete and result.failures == 2


def test_max_failures_stops_with_a_clear_message_and_keeps_the_result():
    def objective(trial):
        if trial.id % 2:
            raise RuntimeError(f"boom {trial.id}")
        return 1.0

    with pytest.raises(SearchFailed, match=r"stopped after 3 failed evaluations \(max_failures=3\)") as info:
        tune(objective, SPACE, max_budget=27, seed=0, max_failures=3)
    assert info.value.result.failures == 3
    assert info.value.result.reason is EndReason.MAX_FAILURES


def test_the_same_error_on_the_first_evaluations_stops_early_and_shows_it_once():
    calls = []

    def objective(trial):
        calls.append(trial.id)
        return undefined_name  # noqa: F821 - the mistake under test

    with pytest.raises(SearchFailed) as info:
        tune(objective, SPACE, max_budget=81, seed=0)
    message = str(info.value)
    assert len(calls) == 3
    assert message.count("NameError: name 'undefined_name' is not defined") == 1
    assert "first 3 evaluations all failed with the same error" in message


def test_prints_are_captured_per_trial(capsys):
    def objective(trial):
        print(f"training trial {trial.id} to {trial.budget}")
        return trial.config["lr"]

    result = tune(objective, SPACE, max_budget=3, seed=0, executor="threads", workers=2)
    assert "training trial" not in capsys.readouterr().out
    assert result.trials[0].output.startswith("training trial 0 to 1")


def test_stopped_is_not_an_exception_and_time_limit_stops_at_report():
    caught = []

    def objective(trial):
        try:
            while True:
                time.sleep(0.01)
                trial.report(1.0)
        except Exception:  # a training loop's own handler must not swallow the stop
            caught.append(True)
            raise

    began = time.monotonic()
    result = tune(objective, SPACE, max_budget=9, seed=0, time_limit=0.5, executor="threads", workers=2)
    assert time.monotonic() - began < 5
    assert not caught
    assert result.reason is EndReason.TIME_LIMIT and "time limit" in result.message
    assert issubclass(Stopped, BaseException) and not issubclass(Stopped, Exception)


def test_time_limit_stops_an_inline_evaluation_at_report():
    def objective(trial):
        while True:
            time.sleep(0.01)
            trial.report(1.0)

    result = tune(objective, SPACE, max_budget=9, seed=0, time_limit=0.3, executor="inline")
    assert result.reason is EndReason.TIME_LIMIT


def test_trial_timeout_fails_the_evaluation_and_the_search_goes_on():
    def objective(trial):
        if trial.id == 0:
            while True:
                time.sleep(0.01)
                trial.report(1.0)
        return trial.config["lr"]

    result = tune(objective, SPACE, max_budget=3, seed=0, trial_timeout=0.3)
    assert result.trials[0].status is TrialStatus.FAILED
    assert "timed out" in result.trials[0].error and "trial_timeout=0.3" in result.trials[0].error
    assert result.complete


@pytest.mark.parametrize("options", EXECUTORS, ids=["inline", "threads"])
def test_an_interrupt_ends_cleanly_with_a_partial_result(options):
    started = threading.Event()

    def objective(trial):
        started.set()
        for _ in range(10):
            time.sleep(0.005)
            trial.report(trial.config["lr"])

    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    result = tune(objective, SPACE, max_budget=27, seed=0, **options)
    timer.join()
    assert started.is_set()
    assert result.reason is EndReason.INTERRUPTED
    assert "run again to resume" in result.message
    assert 0 < result.evaluations < 27 + 12 + 6 + 4 + 12
    assert not [t for t in result.trials.values() if t.status is TrialStatus.RUNNING]


def test_keyboard_interrupt_raised_in_the_objective_stops_the_search():
    calls = []

    def objective(trial):
        calls.append(trial.id)
        if trial.id == 5:
            raise KeyboardInterrupt
        return trial.config["lr"]

    result = tune(objective, SPACE, max_budget=9, seed=0)
    assert result.reason is EndReason.INTERRUPTED
    assert calls[-1] == 5 and result.evaluations == len(calls) - 1
    assert result.trials[5].status is TrialStatus.PENDING


def test_result_dataframe_and_summary():
    result = tune(Counter(), SPACE, max_budget=9, seed=0)
    frame = result.to_dataframe()
    assert len(frame) == len(result.trials)
    assert {"trial", "status", "budget", "val_error", "lr", "units"} <= set(frame.columns)
    best = result.best
    row = frame[frame.trial == best.trial].iloc[0]
    assert row.val_error == best.value and row.lr == best.config["lr"]
    text = result.summary()
    assert "completed" in text and "minimized val_error" in text and f"trial {best.trial}" in text
    assert result.plan.evaluations == 22


def test_a_space_smaller_than_the_plan_is_said():
    with pytest.warns(UserWarning, match="holds 4 configurations but the plan samples 14"):
        result = tune(lambda t: 1.0, {"a": "choice(1, 2)", "b": "choice(3, 4)"}, max_budget=9, brackets=2, seed=0)
    assert result.complete


def test_bad_options_and_objectives_are_clear():
    with pytest.raises(hbmagic.OptionError, match="`mode` is 'maximize', but must be 'min' or 'max'"):
        tune(Counter(), SPACE, max_budget=9, mode="maximize")
    with pytest.raises(hbmagic.OptionError, match="one argument, the trial"):
        tune(lambda: 1.0, SPACE, max_budget=9)
    with pytest.raises(hbmagic.OptionError, match="asha needs a stopping rule"):
        tune(Counter(), SPACE, max_budget=9, algorithm="asha")
    with pytest.raises(hbmagic.OptionError, match="`executor` is 'gpu'"):
        tune(Counter(), SPACE, max_budget=9, executor="gpu")


def test_asha_runs_to_max_trials():
    result = tune(
        Counter(), SPACE, max_budget=9, algorithm="asha", max_trials=30, seed=0, executor="threads", workers=3
    )
    assert len(result.trials) == 30 and result.complete
    assert result.best.budget == 9


def test_iterations_repeat_the_search_with_new_configurations():
    result = tune(Counter(), SPACE, max_budget=9, iterations=2, seed=0)
    assert len(result.trials) == 2 * 17
    assert len(result.iteration_winners()) == 2
    assert "iteration winners" in result.summary()
