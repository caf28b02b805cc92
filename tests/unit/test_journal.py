"""Never lose work: the journal, resuming after interrupts and kills, and stored studies."""

import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import hbmagic
from hbmagic import EndReason, TrialStatus, tune
from hbmagic.events import EvalStatus, EvaluationEnded, TrialStopped
from hbmagic.journal import read_events
from hbmagic.study import (
    StudyBusyError,
    StudyMismatchError,
    delete_study,
    list_studies,
    load_study,
)

SPACE = {"lr": "loguniform(1e-3, 1e-1)", "units": "randint(8, 64)"}


class Trainer:
    """Trains epoch by epoch from trial.state; counts the units of evaluations that complete.

    ``interrupt`` holds call numbers at which the evaluation is interrupted halfway.
    """

    def __init__(self, interrupt=()):
        self.interrupt = set(interrupt)
        self.calls = 0
        self.units = 0
        self.restarted_from_zero = 0

    def __call__(self, trial):
        self.calls += 1
        state = trial.state
        if not state:
            state["epochs"] = 0
            self.restarted_from_zero += trial.rung > 0
        assert state["epochs"] == trial.start, (state["epochs"], trial.start)
        halfway = (trial.start + trial.budget) // 2
        for epoch in range(int(trial.start), int(trial.budget)):
            state["epochs"] += 1
            if self.calls in self.interrupt and epoch == halfway:
                raise KeyboardInterrupt
            trial.report(val_error=abs(math.log10(trial.config["lr"]) + 2) + 1 / (epoch + 1))
        self.units += trial.budget - trial.start


def completed_pairs(folder):
    events = [e for e in read_events(folder / "journal.sqlite") if isinstance(e, EvaluationEnded)]
    return [(e.trial, e.rung) for e in events if e.status is EvalStatus.COMPLETED]


def test_every_event_goes_to_sqlite_in_wal_mode(tmp_path, capsys):
    seen = []
    result = tune(Trainer(), SPACE, max_budget=9, seed=0, storage=tmp_path, study="s", observers=[seen.append])
    assert capsys.readouterr().out.startswith("new study s")
    db = sqlite3.connect(tmp_path / "s" / "journal.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == len(seen)
    stored = list(read_events(tmp_path / "s" / "journal.sqlite"))
    assert [type(e) for e in stored] == [type(e) for e in seen]
    assert load_study("s", tmp_path).best == result.best


def test_interrupts_then_resume_train_exactly_the_plan(tmp_path, capsys):
    trainer = Trainer(interrupt=[17, 60, 140])
    runs = []
    while True:
        result = tune(trainer, SPACE, max_budget=81, eta=3, seed=1, storage=tmp_path, study="hb")
        runs.append(result)
        if result.complete:
            break
        assert result.reason is EndReason.INTERRUPTED and "run again to resume" in result.message
        assert load_study("hb", tmp_path).evaluations == result.evaluations  # the partial result is stored
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("new study hb")
    assert out[1].startswith("resuming: 16 of 206 evaluations reused")
    assert len(runs) == 4
    # Nothing completed ran twice, interrupted evaluations resumed from the last committed state.
    pairs = completed_pairs(tmp_path / "hb")
    assert len(pairs) == len(set(pairs)) == 206
    assert trainer.units == 1581
    assert trainer.calls == 206 + 3
    assert trainer.restarted_from_zero == 0
    reference = tune(Trainer(), SPACE, max_budget=81, eta=3, seed=1)
    assert runs[-1].best == reference.best


def test_asha_keeps_a_state_only_while_its_trial_may_still_be_promoted(tmp_path):
    files = []

    def objective(trial):
        trial.state.setdefault("weights", [trial.id] * 100)
        folder = tmp_path / "a" / "states"
        files.append(len(list(folder.iterdir())) if folder.exists() else 0)
        trial.report(abs(math.log10(trial.config["lr"]) + 2) + 1 / trial.budget)

    tune(objective, SPACE, max_budget=81, eta=3, algorithm="asha", max_trials=143, seed=0, storage=tmp_path, study="a")
    # Only the top third of the first rung's 143 results can ever be promoted; every other state goes at once.
    assert 0 < max(files) <= 143 // 3
    assert list((tmp_path / "a" / "states").iterdir()) == []


def test_asha_interrupted_then_resumed_stops_each_trial_once(tmp_path):
    trainer = Trainer(interrupt=[20, 90, 150])
    options = dict(max_budget=81, eta=3, algorithm="asha", max_trials=100, seed=2, storage=tmp_path, study="asha")
    runs = 0
    while not (result := tune(trainer, SPACE, **options)).complete:
        runs += 1
        assert result.reason is EndReason.INTERRUPTED
    assert runs == 3
    pairs = completed_pairs(tmp_path / "asha")
    assert len(pairs) == len(set(pairs))
    assert trainer.restarted_from_zero == 0
    stops = [e.trial for e in read_events(tmp_path / "asha" / "journal.sqlite") if isinstance(e, TrialStopped)]
    assert len(stops) == len(set(stops)) > 50
    assert list((tmp_path / "asha" / "states").iterdir()) == []
    reference = tune(Trainer(), SPACE, **{**options, "storage": None})
    assert result.best == reference.best
    assert sorted(pairs) == sorted((t.id, r) for t in reference.trials.values() for r in range(t.rung + 1))


@pytest.mark.parametrize("executor", ["inline", "threads"])
def test_sigint_from_outside_then_resume(tmp_path, executor):
    def slow(trial):
        if not trial.state:
            trial.state["epochs"] = 0
        assert trial.state["epochs"] == trial.start
        for _ in range(int(trial.start), int(trial.budget)):
            time.sleep(0.004)
            trial.state["epochs"] += 1
            trial.report(trial.config["lr"])

    where = {"executor": executor, "workers": 2 if executor == "threads" else None}
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))  # the threads search takes 0.75 s
    timer.start()
    first = tune(slow, SPACE, max_budget=27, seed=2, storage=tmp_path, study="x", **where)
    timer.join()
    assert first.reason is EndReason.INTERRUPTED
    second = tune(slow, SPACE, max_budget=27, seed=2, storage=tmp_path, study="x", **where)
    assert second.complete and second.failures == 0
    pairs = completed_pairs(tmp_path / "x")
    assert len(pairs) == len(set(pairs)) == second.plan.evaluations


KILLED_SCRIPT = textwrap.dedent(
    """
    import json, math, sys, time
    import hbmagic

    epoch, options = float(sys.argv[3]), json.loads(sys.argv[4])

    def objective(trial):
        if not trial.state:
            trial.state["epochs"] = 0
        assert trial.state["epochs"] == trial.start, "state does not match start"
        for _ in range(int(trial.start), int(trial.budget)):
            time.sleep(epoch)
            trial.state["epochs"] += 1
            trial.report(abs(math.log10(trial.config["lr"]) + 2) + 1 / trial.state["epochs"])

    workers = 2 if sys.argv[2] == "threads" else None
    result = hbmagic.tune(objective, {"lr": "loguniform(1e-3, 1e-1)"}, max_budget=27, seed=5,
                          storage=sys.argv[1], study="killed", executor=sys.argv[2], workers=workers, **options)
    print("DONE", result.reason.value, result.failures)
    """
)
KILLS = 5  # each 0.4-1.2 s into a run: at most 6 s of a search's time
# Seconds per epoch that make each search take about 7 s uninterrupted, so that every kill lands before its end.
KILLED = {
    "inline-hyperband": ("inline", 0.02, {}),
    "threads-hyperband": ("threads", 0.04, {}),
    "inline-asha": ("inline", 0.015, {"algorithm": "asha", "max_trials": 120}),
}


@pytest.mark.parametrize("case", list(KILLED))
def test_sigkill_at_random_moments_always_resumes_to_a_correct_study(tmp_path, case):
    executor, epoch, options = KILLED[case]
    script = tmp_path / "search.py"
    script.write_text(KILLED_SCRIPT)
    storage = tmp_path / "storage"
    rng = random.Random(case)
    kills = 0
    for _attempt in range(30):
        process = subprocess.Popen(
            [sys.executable, str(script), str(storage), executor, str(epoch), json.dumps(options)],
            stdout=subprocess.PIPE,
            text=True,
        )
        if kills < KILLS:
            time.sleep(rng.uniform(0.4, 1.2))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills += 1
                continue
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0, out
        break
    assert kills == KILLS  # every search outlasts its kills
    assert "DONE completed 0" in out
    pairs = completed_pairs(storage / "killed")
    assert len(pairs) == len(set(pairs))  # every evaluation once, none rerun
    result = load_study("killed", storage)
    assert result.complete and result.failures == 0
    leftovers = list((storage / "killed" / "states").iterdir())
    assert leftovers == []  # every trial is decided, so no state is kept
    stops = [e.trial for e in read_events(storage / "killed" / "journal.sqlite") if isinstance(e, TrialStopped)]
    assert len(stops) == len(set(stops))  # decisions a kill lost are recomputed, never doubled

    def objective(trial):
        return abs(math.log10(trial.config["lr"]) + 2) + 1 / trial.budget

    reference = tune(objective, {"lr": "loguniform(1e-3, 1e-1)"}, max_budget=27, seed=5, **options)
    assert len(pairs) == reference.evaluations  # R=27, eta=3 Hyperband: 69
    assert {t.id: (t.status, t.budget) for t in result.trials.values()} == {
        t.id: (t.status, t.budget) for t in reference.trials.values()
    }


def test_states_of_live_trials_are_files_and_stopped_ones_are_deleted(tmp_path):
    seen_files = []

    def objective(trial):
        if not trial.state:
            trial.state["weights"] = [trial.id] * 100
        folder = tmp_path / "f" / "states"
        seen_files.append(sorted(p.name for p in folder.iterdir()) if folder.exists() else [])
        trial.report(trial.config["lr"])

    tune(objective, SPACE, max_budget=9, eta=3, brackets=1, seed=0, storage=tmp_path, study="f")
    # After rung 0 (9 trials) is decided, only the 3 promoted trials keep a state file.
    assert len(seen_files[9]) == 3 and all("-rung-0" in name for name in seen_files[9])
    assert list((tmp_path / "f" / "states").iterdir()) == []


def test_torch_state_is_saved_with_torch_and_reloaded(tmp_path):
    torch = pytest.importorskip("torch")

    calls = []
    interrupted = []

    def objective(trial):
        state = trial.state
        if not state:
            torch.manual_seed(trial.seed)
            state["model"] = torch.nn.Linear(4, 1)
            state["opt"] = torch.optim.SGD(state["model"].parameters(), lr=0.1, momentum=0.9)
        calls.append((trial.id, trial.rung, trial.start, type(state["model"]).__name__))
        x = torch.ones(8, 4)
        for _ in range(int(trial.start), int(trial.budget)):
            state["opt"].zero_grad()
            loss = state["model"](x).pow(2).mean()
            loss.backward()
            state["opt"].step()
            if trial.rung == 1 and not interrupted:
                interrupted.append(trial.id)
                raise KeyboardInterrupt
            trial.report(loss)

    first = tune(objective, SPACE, max_budget=9, brackets=1, seed=0, storage=tmp_path, study="t", metric="loss")
    assert first.reason is EndReason.INTERRUPTED
    files = list((tmp_path / "t" / "states").iterdir())
    assert files and all(f.read_bytes()[:4] == b"PK\x03\x04" for f in files)
    calls.clear()
    second = tune(objective, SPACE, max_budget=9, brackets=1, seed=0, storage=tmp_path, study="t", metric="loss")
    assert second.complete
    resumed = [c for c in calls if c[1] > 0]
    assert resumed and all(start > 0 and kind == "Linear" for _, _, start, kind in resumed)


def test_study_key_mismatch_new_and_default_names(tmp_path, capsys):
    tune(Trainer(), SPACE, max_budget=9, seed=0, storage=tmp_path, study="named")
    with pytest.raises(StudyMismatchError, match="different space"):
        tune(Trainer(), {"lr": "uniform(0, 1)"}, max_budget=9, seed=0, storage=tmp_path, study="named")
    with pytest.raises(StudyMismatchError, match="different plan"):
        tune(Trainer(), SPACE, max_budget=27, seed=0, storage=tmp_path, study="named")
    capsys.readouterr()
    tune(Trainer(), {"lr": "uniform(0, 1)"}, max_budget=9, seed=0, storage=tmp_path, study="named", new=True)
    assert capsys.readouterr().out.startswith("new study named")

    def other(trial):
        return trial.config["lr"]

    tune(Trainer(), SPACE, max_budget=9, seed=0, storage=tmp_path)
    tune(Trainer(), SPACE, max_budget=9, seed=0, storage=tmp_path)
    tune(other, SPACE, max_budget=9, seed=0, storage=tmp_path)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("new study Trainer-") and out[1].startswith("resuming: 22 of 22 evaluations reused")
    assert out[2].startswith("new study other-")


def test_an_unseeded_study_keeps_its_seed(tmp_path):
    a = tune(Trainer(interrupt=[5]), SPACE, max_budget=9, storage=tmp_path, study="u")
    b = tune(Trainer(), SPACE, max_budget=9, storage=tmp_path, study="u")
    assert a.seed == b.seed and b.complete


def test_a_finished_study_is_extended_with_more_iterations(tmp_path, capsys):
    trainer = Trainer()
    tune(trainer, SPACE, max_budget=9, seed=0, storage=tmp_path, study="e")
    assert trainer.calls == 22
    result = tune(trainer, SPACE, max_budget=9, seed=0, storage=tmp_path, study="e", iterations=2)
    assert trainer.calls == 44 and result.complete and len(result.trials) == 34
    assert "resuming: 22 of 44 evaluations reused" in capsys.readouterr().out


HOLDER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import hbmagic

    def objective(trial):
        open(sys.argv[2], "w").close()  # prints are captured per trial: signal with a file
        time.sleep(30)
        return 1.0

    hbmagic.tune(objective, {"x": "uniform(0, 1)"}, max_budget=3, seed=0, storage=sys.argv[1], study="busy")
    """
)


def test_a_second_process_is_refused_clearly(tmp_path):
    script = tmp_path / "holder.py"
    script.write_text(HOLDER_SCRIPT)
    started = tmp_path / "started"
    holder = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(started)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists()
        with pytest.raises(StudyBusyError, match=f"study 'busy' is open in process {holder.pid}"):
            tune(lambda t: 1.0, {"x": "uniform(0, 1)"}, max_budget=3, seed=0, storage=tmp_path, study="busy")
        assert [info.status for info in list_studies(tmp_path)] == ["running"]
        with pytest.raises(StudyBusyError):
            delete_study("busy", tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert [info.status for info in list_studies(tmp_path)] == ["stopped abruptly (resumable)"]


def test_list_show_delete(tmp_path):
    tune(Trainer(), SPACE, max_budget=9, seed=0, storage=tmp_path, study="one")
    tune(Trainer(interrupt=[3]), SPACE, max_budget=3, seed=0, storage=tmp_path, study="two")
    infos = {info.name: info for info in list_studies(tmp_path)}
    assert infos["one"].status == "completed" and infos["one"].evaluations == 22 and infos["one"].planned == 22
    assert infos["two"].status == "interrupted" and infos["two"].evaluations == 2
    assert "best val_error=" in str(infos["one"])
    shown = load_study("one", tmp_path)
    assert shown.complete and shown.best.metric == "val_error"
    assert delete_study("two", tmp_path) == tmp_path / "two"
    assert [info.name for info in list_studies(tmp_path)] == ["one"]
    with pytest.raises(hbmagic.OptionError, match=r"no study named 'two'.*stored studies: one"):
        load_study("two", tmp_path)


def test_default_storage_is_hbmagic_dir(tmp_path, monkeypatch):
    from hbmagic.study import default_storage

    monkeypatch.setenv("HBMAGIC_DIR", str(tmp_path / "env"))
    assert default_storage() == tmp_path / "env"
    monkeypatch.delenv("HBMAGIC_DIR")
    monkeypatch.chdir(tmp_path)
    folder = default_storage()
    assert folder == tmp_path / ".hbmagic" and (folder / ".gitignore").read_text().strip().endswith("*")


def test_a_failed_trial_is_not_retried_on_resume(tmp_path):
    calls = []

    def objective(trial):
        calls.append(trial.id)
        if trial.id == 1:
            raise ValueError("bad config")
        if trial.id == 6:
            raise KeyboardInterrupt
        return trial.config["lr"]

    tune(objective, SPACE, max_budget=9, seed=0, storage=tmp_path, study="f")
    before = list(calls)
    result = tune(objective, SPACE, max_budget=9, seed=0, storage=tmp_path, study="f")
    rerun = calls[len(before) :]
    assert 1 in before and 1 not in rerun and rerun[0] == 6
    assert result.trials[1].status is TrialStatus.FAILED


def test_resumed_result_has_the_whole_history(tmp_path):
    first = tune(Trainer(interrupt=[12]), SPACE, max_budget=9, seed=3, storage=tmp_path, study="h")
    seen = []
    second = tune(Trainer(), SPACE, max_budget=9, seed=3, storage=tmp_path, study="h", observers=[seen.append])
    assert first.evaluations == 11 and second.evaluations == 22
    assert sum(isinstance(e, EvaluationEnded) and e.status is EvalStatus.COMPLETED for e in seen) == 22
    done_first = [t for t in first.trials.values() if t.evaluations and t.status is not TrialStatus.PENDING]
    assert done_first
    for trial in done_first:
        assert second.trials[trial.id].metrics.items() >= trial.metrics.items()
        assert second.trials[trial.id].evaluations[: len(trial.evaluations)] == trial.evaluations


def test_a_state_that_cannot_be_saved_is_said_once_and_the_search_goes_on(tmp_path):
    def objective(trial):
        if not trial.state:
            trial.state["gen"] = (i for i in range(3))  # generators cannot be pickled
        return trial.config["lr"]

    with pytest.warns(UserWarning, match="trial.state could not be saved") as caught:
        result = tune(objective, SPACE, max_budget=9, seed=0, storage=tmp_path, study="g")
    assert result.complete
    assert sum("could not be saved" in str(w.message) for w in caught) == 1
