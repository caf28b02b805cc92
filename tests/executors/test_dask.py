"""The Dask executor on a real LocalCluster of worker processes (the session's, from conftest).

Objectives here are pickled by value, as a notebook's are: Dask workers get
copies of them, never the test module itself.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import cloudpickle
import psutil
import pytest

import hbmagic
from hbmagic.board import Board
from hbmagic.evaluate import Task
from hbmagic.events import (
    BracketDone,
    EndReason,
    EvalStatus,
    EvaluationEnded,
    EvaluationStarted,
    Reported,
    RungDone,
    SlotAdded,
    StudyStarted,
    TrialCreated,
    TrialPromoted,
    TrialStopped,
)
from hbmagic.executors import make_executor
from hbmagic.scheduler import Job

pytest.importorskip("distributed")
import dask

from hbmagic.executors.dask import DaskExecutor

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SPACE = {"x": "uniform(0, 1)", "width": "choice(8, 16, 32)"}
WORKERS = 2  # the session cluster's (conftest): one thread each
ALLOWED_FAILURES = 1  # its distributed.scheduler.allowed-failures


def loss(config: dict, budget: float) -> float:
    """A deterministic learning curve: better with budget, best near x = 0.3."""
    return (config["x"] - 0.3) ** 2 + 0.05 * config["width"] / 32 + 1.0 / (budget + 1)


class Events:
    """An observer keeping every event with the monotonic time it arrived."""

    def __init__(self) -> None:
        self.items: list[tuple[float, object]] = []

    def __call__(self, event: object) -> None:
        self.items.append((time.monotonic(), event))

    def of(self, kind: type) -> list:
        return [e for _, e in self.items if isinstance(e, kind)]


def wait_for_file(path: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def worker_pids(client, on_error: str = "raise") -> dict[str, int]:
    """Each worker's process id; with on_error="ignore", a worker dying meanwhile is left out."""
    return client.run(os.getpid, on_error=on_error)


def kill_when_written(marker) -> tuple[list[int], threading.Thread]:
    """A thread that SIGKILLs the worker process whose id appears in ``marker``; the list gets its id."""
    killed: list[int] = []

    def kill() -> None:
        pid = int(wait_for_file(marker))
        time.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    return killed, killer


def wait_for_replacements(client, gone: set[int], timeout: float = 60, workers: int = WORKERS) -> dict[str, int]:
    """Until the cluster again has ``workers`` workers, none of them one of the ``gone`` processes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pids = worker_pids(client)
        except Exception:
            pids = {}
        if len(pids) == workers and not set(pids.values()) & gone:
            return pids
        time.sleep(0.2)
    raise AssertionError(f"the cluster did not get {workers} live workers back")


# -- running on the cluster ----------------------------------------------------------------


def test_tune_with_a_client_runs_on_the_workers_with_one_lane_per_thread_and_live_reports(dask_client):
    pids = set(worker_pids(dask_client).values())

    def objective(trial):
        for epoch in range(int(trial.start), int(trial.budget)):
            time.sleep(0.1)
            trial.report(loss=loss(trial.config, epoch + 1), pid=os.getpid())

    events = Events()
    result = hbmagic.tune(
        objective, SPACE, max_budget=9, eta=3, seed=3, metric="loss", executor=dask_client, observers=[events]
    )

    assert result.reason is EndReason.COMPLETED
    assert result.evaluations == 22 and result.failures == 0
    (started,) = events.of(StudyStarted)
    assert len(started.slots) == WORKERS  # one lane per worker thread
    assert {e.slot for e in events.of(EvaluationStarted)} == set(range(WORKERS))
    assert {e.device for e in events.of(EvaluationStarted)} == {"cpu"}
    ran_in = {e.metrics["pid"] for e in events.of(Reported)}
    assert ran_in <= pids and os.getpid() not in ran_in and len(ran_in) == WORKERS
    # Reports arrive while the evaluation runs, not with its result: the last bracket's
    # 9-epoch evaluations (0.9 s each) report for most of that time before they end.
    ended = {(e.trial, e.rung): t for t, e in events.items if isinstance(e, EvaluationEnded) and e.trained == 9}
    first: dict[tuple[int, int], float] = {}
    for t, e in events.items:
        if isinstance(e, Reported):
            first.setdefault((e.trial, e.rung), t)
    assert len(ended) >= 3 and all(t - first[key] > 0.6 for key, t in ended.items())
    best = min(result.trials.values(), key=lambda t: (t.budget != 9, t.value))
    assert result.best.trial == best.id
    assert result.best.value == pytest.approx(loss(best.config, 9))


def test_a_worker_that_joins_mid_search_gets_a_lane_and_takes_evaluations():
    """A cluster scaled up while a search runs: the new worker's thread becomes a slot, a lane, and busy."""
    from distributed import Client, LocalCluster

    def objective(trial):
        time.sleep(0.3)
        trial.report(loss=loss(trial.config, trial.budget), pid=os.getpid())

    events = Events()
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        first = set(worker_pids(client).values())

        def scale_up_after_the_first_evaluation() -> None:
            deadline = time.monotonic() + 30
            while not events.of(EvaluationEnded) and time.monotonic() < deadline:
                time.sleep(0.05)
            cluster.scale(2)

        scaler = threading.Thread(target=scale_up_after_the_first_evaluation, daemon=True)
        scaler.start()
        board = Board()
        result = hbmagic.tune(
            objective,
            SPACE,
            max_budget=9,
            eta=3,
            seed=3,
            metric="loss",
            executor=client,
            observers=[events, board.apply],
        )
        scaler.join(5)
        second = set(worker_pids(client).values()) - first

    assert result.reason is EndReason.COMPLETED and result.failures == 0 and result.evaluations == 22
    (started,) = events.of(StudyStarted)
    assert len(started.slots) == 1
    (added,) = events.of(SlotAdded)
    assert added.slot == 1 and added.device == "cpu" and "worker" in added.label
    on_new = [e for e in events.of(EvaluationStarted) if e.slot == 1]
    assert on_new and all(e.at >= added.at for e in on_new)
    ran_in = {e.metrics["pid"] for e in events.of(Reported)}
    assert len(second) == 1 and second <= ran_in and first <= ran_in  # both workers trained trials
    assert [lane["label"] for lane in board.lanes] == [started.slots[0], added.label]
    assert board.info["slots"] == [started.slots[0], added.label]


def test_cluster_option_connects_to_an_address_and_closes_its_own_client(dask_client, dask_cluster):
    clients_before = set(dask_cluster.scheduler.clients)

    def objective(trial):
        return loss(trial.config, trial.budget)

    events = Events()
    result = hbmagic.tune(
        objective, SPACE, max_budget=3, eta=3, seed=1, executor="dask", cluster=dask_cluster.scheduler_address,
        observers=[events],
    )  # fmt: skip
    assert result.reason is EndReason.COMPLETED and result.evaluations == 6
    assert len(events.of(StudyStarted)[0].slots) == WORKERS
    deadline = time.monotonic() + 10
    while set(dask_cluster.scheduler.clients) != clients_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(dask_cluster.scheduler.clients) == clients_before  # the client hbmagic opened is closed


def test_a_wrong_cluster_address_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("hbmagic.executors.dask.CONNECT_TIMEOUT", 1)
    with pytest.raises(hbmagic.OptionError, match=r"could not connect to the Dask scheduler at cluster='tcp://127\.0"):
        make_executor("dask", cluster="tcp://127.0.0.1:9")


def test_magic_runs_a_cell_on_the_cluster(dask_client, dask_cluster, tmp_path, monkeypatch):
    from IPython.testing.globalipapp import get_ipython

    monkeypatch.setenv("HBMAGIC_DIR", str(tmp_path / "studies"))
    ip = get_ipython()
    ip.run_line_magic("load_ext", "hbmagic")
    ip.user_ns["offset"] = 0.25  # a notebook variable the body reads: the workers get a copy
    try:
        ip.run_cell_magic(
            "hyperband",
            f"--max-budget 3 --eta 3 --seed 2 --metric loss --executor dask --cluster {dask_cluster.scheduler_address} "
            "--no-widget -o found",
            "#| x: uniform(0, 1)\nimport os\nreport(loss=(x - offset) ** 2 + 1 / budget, pid=os.getpid())\n",
        )
        found = ip.user_ns["found"]
    finally:
        for name in ("offset", "found"):
            ip.user_ns.pop(name, None)
    assert found.reason is EndReason.COMPLETED and found.evaluations == 6
    pids = {values["pid"] for t in found.trials.values() for values in t.metrics.values()}
    assert pids and pids <= set(worker_pids(dask_client).values())
    assert found.best.value == pytest.approx((found.best.config["x"] - 0.25) ** 2 + 1 / 3)


def test_a_cluster_of_its_own_listens_on_loopback_only_and_is_closed_after(dask_client):
    """executor='dask' without an address starts a LocalCluster here: nothing it opens listens beyond 127.0.0.1."""
    seen: dict[str, object] = {}
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}

    def inspect(event):
        if isinstance(event, StudyStarted):
            processes = [me, *me.children(recursive=True)]
            seen["children"] = [p.pid for p in processes[1:] if p.pid not in before]
            seen["listening"] = [
                (p.pid, c.laddr.ip, c.laddr.port)
                for p in processes
                for c in p.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN
            ]

    def objective(trial):
        trial.report(loss=loss(trial.config, trial.budget), pid=os.getpid())

    result = hbmagic.tune(
        objective, SPACE, max_budget=3, eta=3, seed=4, metric="loss", executor="dask", workers=1, observers=[inspect]
    )
    assert result.reason is EndReason.COMPLETED and result.evaluations == 6
    ran_in = {values["pid"] for t in result.trials.values() for values in t.metrics.values()}
    assert len(ran_in) == 1 and ran_in <= set(seen["children"])  # its one worker process
    assert seen["listening"], "the cluster listens somewhere"
    assert {ip for _, ip, _ in seen["listening"]} <= {"127.0.0.1", "::1"}, seen["listening"]
    own = seen["children"]
    assert own, "the cluster of its own started worker processes"
    deadline = time.monotonic() + 20
    while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in own):
        assert time.monotonic() < deadline, "the cluster's worker processes outlived the search"
        time.sleep(0.1)


def test_the_objective_is_shipped_once_per_worker_not_once_per_evaluation(dask_client, tmp_path):
    class LoadCounter:
        """Each unpickling makes a new folder in ``path``: the folders count the loads."""

        def __init__(self, path: str):
            self.path = path

        def __reduce__(self):
            return (tempfile.mkdtemp, (None, "load-", self.path))

    counter = LoadCounter(str(tmp_path))

    def objective(trial):
        assert counter  # the objective carries the counter (and, in a notebook, its data)
        return loss(trial.config, trial.budget)

    result = hbmagic.tune(objective, SPACE, max_budget=9, eta=3, seed=5, executor=dask_client)
    assert result.evaluations == 22
    assert len(list(tmp_path.glob("load-*"))) == WORKERS


def test_an_objective_a_worker_cannot_load_fails_with_a_clear_error(dask_client, tmp_path, monkeypatch):
    (tmp_path / "client_only_module.py").write_text("def value(x):\n    return x * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import client_only_module  # only this process can import it: the workers' paths lack the folder

    def objective(trial):
        return client_only_module.value(trial.config["x"])

    with pytest.raises(hbmagic.SearchFailed) as caught:
        hbmagic.tune(objective, SPACE, max_budget=3, eta=3, seed=1, executor=dask_client)
    message = str(caught.value)
    assert "could not be loaded on Dask worker" in message and "client_only_module" in message
    assert "installed where the workers run" in message


def test_an_objective_that_cannot_be_pickled_is_refused_before_anything_runs(dask_client, dask_cluster):
    lock = threading.Lock()
    ran = []

    def objective(trial):
        with lock:
            ran.append(trial.id)
        return loss(trial.config, trial.budget)

    clients_before = set(dask_cluster.scheduler.clients)
    with pytest.raises(hbmagic.OptionError, match=r"executor='dask' .* cannot be pickled"):
        hbmagic.tune(objective, SPACE, max_budget=3, eta=3, executor="dask", cluster=dask_cluster.scheduler_address)
    assert not ran
    deadline = time.monotonic() + 10
    while set(dask_cluster.scheduler.clients) != clients_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(dask_cluster.scheduler.clients) == clients_before  # the client opened for it is closed


# -- trial.state across workers ------------------------------------------------------------


def test_trial_state_crosses_workers_as_bytes(dask_client):
    """A trial trained on one worker continues on the other from its state's bytes (torch objects included)."""
    pytest.importorskip("torch")

    def objective(trial):
        import torch

        state = trial.state
        if not state:
            torch.manual_seed(trial.seed)
            state["model"] = torch.nn.Linear(4, 1)
            state["opt"] = torch.optim.SGD(state["model"].parameters(), lr=0.1, momentum=0.9)
            state["history"] = []
        model, opt = state["model"], state["opt"]
        received = float(sum(p.detach().sum() for p in model.parameters()))
        data = torch.ones(8, 4)
        for _ in range(int(trial.start), int(trial.budget)):
            opt.zero_grad()
            value = ((model(data) - 1) ** 2).mean()
            value.backward()
            opt.step()
        state["history"].append(os.getpid())
        sent = float(sum(p.detach().sum() for p in model.parameters()))
        trial.report(loss=float(value), received=received, sent=sent, pid=os.getpid(), seen=len(state["history"]))

    executor = DaskExecutor(dask_client)
    assert [s.device for s in executor.slots] == ["cpu"] * WORKERS
    reports: list[Reported] = []
    executor.start(objective, reports.append)
    try:
        config = {"x": 0.5, "width": 8}
        first = Task(Job(0, 0, 1, 0, 1, 0, config, 11), 0, None, 0, "cpu", "loss", want_bytes=True)
        one = executor.submit(first).result(timeout=60)
        assert one.status is EvalStatus.COMPLETED, one.error
        assert one.state is None and isinstance(one.state_bytes, bytes) and one.state_bytes[:2] == b"PK"
        second = Task(Job(0, 0, 1, 1, 3, 1, config, 11), 1, one.state_bytes, 1, "cpu", "loss", want_bytes=True)
        two = executor.submit(second).result(timeout=60)
        assert two.status is EvalStatus.COMPLETED, two.error
    finally:
        executor.shutdown()
    assert two.metrics["pid"] != one.metrics["pid"]  # slot 1 is the other worker
    assert two.metrics["received"] == pytest.approx(one.metrics["sent"])  # the weights it left off with
    assert two.metrics["seen"] == 2  # the state carried the first worker's history
    deadline = time.monotonic() + 5
    while len(reports) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [(r.trial, r.rung, r.step) for r in reports] == [(0, 0, 1), (0, 1, 2)]


def grow_state(trial):
    """Appends this evaluation's process id to a large state; reports the state's size and the ids so far."""
    state = trial.state
    if not state:
        state["blob"] = os.urandom(1 << 20) * 24  # 24 MiB: a model's weights
        state["pids"] = []
    if trial.rung == 1 and not MARKER.exists():  # the first try of the resumed evaluation: its worker is killed
        MARKER.write_text(str(os.getpid()))
        time.sleep(30)
    state["pids"].append(os.getpid())
    trial.report(loss=float(len(state["pids"])), size=len(state["blob"]), digest=hash(state["blob"]) % 10**9)


MARKER = Path(tempfile.gettempdir()) / f"hbmagic-dask-state-{os.getpid()}.pid"


def test_a_large_state_travels_beside_the_task_and_survives_its_worker_dying(dask_client):
    """A 24 MiB state is scattered to the worker, not put in the task graph (Dask would warn of a large graph).

    Its worker is killed mid-evaluation, taking the scattered copy with it: the
    evaluation runs again, from the client's bytes, and gets the same state.
    """
    MARKER.unlink(missing_ok=True)
    executor = DaskExecutor(dask_client)
    executor.start(grow_state, lambda event: None)
    killed, killer = kill_when_written(MARKER)
    try:
        config = {"x": 0.5, "width": 8}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = Task(Job(0, 0, 1, 0, 1, 0, config, 11), 0, None, 0, "cpu", "loss", want_bytes=True)
            one = executor.submit(first).result(timeout=60)
            assert one.status is EvalStatus.COMPLETED, one.error
            second = Task(Job(0, 0, 1, 1, 3, 1, config, 11), 1, one.state_bytes, 0, "cpu", "loss", want_bytes=True)
            two = executor.submit(second).result(timeout=90)
        killer.join(5)
    finally:
        executor.shutdown()
        MARKER.unlink(missing_ok=True)
    assert len(one.state_bytes) > 24 << 20
    assert not [w for w in caught if "large graph" in str(w.message)], [str(w.message) for w in caught]
    assert killed, "the worker was killed"
    assert two.status is EvalStatus.COMPLETED, two.error
    assert two.metrics["size"] == one.metrics["size"] == 24 << 20
    assert two.metrics["digest"] == one.metrics["digest"]  # the same bytes
    assert two.metrics["loss"] == 2.0  # the state came from the first evaluation, not from the killed try
    wait_for_replacements(dask_client, set(killed))


def test_promoted_trials_resume_from_their_state_in_a_search(dask_client):
    def objective(trial):
        state = trial.state
        assert trial.start == (state["epochs"] if state else 0)
        state["epochs"] = state.get("epochs", 0)
        for epoch in range(int(trial.start), int(trial.budget)):
            state["epochs"] += 1
            trial.report(loss=loss(trial.config, epoch + 1), epochs=state["epochs"], start=trial.start)

    result = hbmagic.tune(objective, SPACE, max_budget=9, eta=3, seed=6, metric="loss", executor=dask_client)
    assert result.reason is EndReason.COMPLETED and result.failures == 0
    promoted = [t for t in result.trials.values() if len(t.evaluations) > 1]
    assert promoted
    for t in promoted:
        # Every epoch ran once: a promoted trial continued where it stopped, never retrained.
        assert sorted(t.metrics) == list(range(1, int(t.budget) + 1))
        assert all(values["epochs"] == step for step, values in t.metrics.items())


# -- lost workers --------------------------------------------------------------------------


def test_a_worker_killed_mid_evaluation_is_retried_and_the_search_goes_on(dask_client, tmp_path):
    target = 1
    marker = tmp_path / "victim.pid"
    attempts = tmp_path / "attempts"
    attempts.mkdir()

    def objective(trial):
        if trial.id == target:
            tempfile.mkdtemp(prefix=f"rung{trial.rung}-", dir=str(attempts))
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                for step in range(600):  # until the test kills this worker
                    time.sleep(0.05)
                    trial.report(loss=1.0, step=step / 1000)
        time.sleep(0.05)
        return loss(trial.config, trial.budget)

    killed, killer = kill_when_written(marker)
    events = Events()
    result = hbmagic.tune(objective, SPACE, max_budget=3, eta=3, seed=7, executor=dask_client, observers=[events])
    killer.join(5)

    assert killed, "the worker was killed"
    assert result.reason is EndReason.COMPLETED and result.failures == 0
    assert result.trials[target].evaluations[0].status is EvalStatus.COMPLETED
    assert len(list(attempts.glob("rung0-*"))) == 2  # the killed try, and the retry
    assert all(t.evaluations and t.evaluations[-1].status is EvalStatus.COMPLETED for t in result.trials.values())
    pids = wait_for_replacements(dask_client, set(killed))
    assert killed[0] not in pids.values()


def test_an_evaluation_whose_only_worker_dies_runs_again_on_its_replacement(tmp_path):
    """No other worker to retry on: the evaluation waits for the nanny's new worker, then runs there.

    (Dask alone would leave it waiting for the old worker forever.)
    """
    marker = tmp_path / "victim.pid"
    attempts = tmp_path / "attempts"
    attempts.mkdir()

    def objective(trial):
        if (trial.id, trial.rung) == (0, 0):
            tempfile.mkdtemp(prefix="try-", dir=str(attempts))
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                for step in range(600):  # until the test kills the worker
                    time.sleep(0.05)
                    trial.report(loss=1.0, step=step / 1000)
        trial.report(loss=loss(trial.config, trial.budget), pid=os.getpid())

    killed, killer = kill_when_written(marker)
    result = hbmagic.tune(objective, SPACE, max_budget=3, eta=3, seed=16, metric="loss", executor="dask", workers=1)
    killer.join(5)
    assert killed
    assert result.reason is EndReason.COMPLETED and result.failures == 0
    assert len(list(attempts.iterdir())) == 2  # killed with its worker, then run again on the new one
    (pid,) = {values["pid"] for values in result.trials[0].metrics.values() if "pid" in values}
    assert pid != killed[0]  # it ran on the replacement


def test_a_worker_of_its_own_cluster_lost_again_15_s_after_a_loss_still_comes_back():
    """Dask's LocalCluster hard-closes a worker's nanny when, 15 s after a loss (its lost-worker-timeout),
    no worker of that name is there; the nanny replaces it anyway, so a cluster hbmagic starts keeps it.

    Two stuck evaluations ended about that far apart would otherwise leave a one-worker cluster with
    none. Here the worker is killed, then every replacement is killed from 13.5 s to 16.5 s after.
    """
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "15s"}):  # Dask's own (the session sets more)
        executor = DaskExecutor.connect(workers=1)
        try:
            client = executor.client
            (first,) = worker_pids(client).values()
            os.kill(first, signal.SIGKILL)
            lost = time.monotonic()
            killed = {first}
            wait_for_replacements(client, killed, workers=1)
            while time.monotonic() < lost + 13.5:
                time.sleep(0.05)
            while time.monotonic() < lost + 16.5:
                for pid in worker_pids(client, "ignore").values():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                time.sleep(0.05)
            assert len(killed) >= 2
            wait_for_replacements(client, killed, timeout=30, workers=1)
        finally:
            executor.shutdown()
        assert dask.config.get("distributed.deploy.lost-worker-timeout") == "15s"  # the user's setting is back


def test_an_evaluation_that_kills_every_worker_it_runs_on_fails_and_the_search_goes_on(dask_client, tmp_path):
    target = 2
    attempts = tmp_path / "attempts"
    attempts.mkdir()

    def objective(trial):
        if trial.id == target:
            tempfile.mkdtemp(prefix="try-", dir=str(attempts))
            os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
        return loss(trial.config, trial.budget)

    result = hbmagic.tune(objective, SPACE, max_budget=3, eta=3, seed=8, executor=dask_client)

    assert result.reason is EndReason.COMPLETED
    assert len(list(attempts.glob("try-*"))) == ALLOWED_FAILURES + 1
    failed = result.trials[target]
    assert failed.evaluations[0].status is EvalStatus.FAILED
    assert "Dask worker running this evaluation died" in failed.error
    assert f"allowed-failures is {ALLOWED_FAILURES}" in failed.error
    others = [t for t in result.trials.values() if t.id != target]
    assert others and all(t.evaluations[-1].status is EvalStatus.COMPLETED for t in others)
    wait_for_replacements(dask_client, set())  # the nannies bring the workers back


# -- stopping ------------------------------------------------------------------------------


def slow_objective(trial):
    """Twenty reports per evaluation, 50 ms apart."""
    for i in range(1, 21):
        time.sleep(0.05)
        trial.report(loss=loss(trial.config, trial.budget), step=trial.start + i * (trial.budget - trial.start) / 20)


def test_an_interrupt_stops_the_workers_evaluations_at_their_next_report(dask_client):
    events = Events()
    interrupted: list[float] = []
    seen: dict[tuple[int, int], int] = {}  # reports since the first evaluation completed

    def interrupt(event):
        if isinstance(event, EvaluationEnded) and event.status is EvalStatus.COMPLETED:
            seen.setdefault((-1, -1), 0)
        elif isinstance(event, Reported) and seen and not interrupted:
            key = (event.trial, event.rung)
            seen[key] = seen.get(key, 0) + 1
            if seen[key] == 5:  # a quarter into an evaluation that started after one completed
                interrupted.append(time.monotonic())
                signal.raise_signal(signal.SIGINT)  # as a kernel interrupt does

    result = hbmagic.tune(
        slow_objective, SPACE, max_budget=9, eta=3, seed=9, executor=dask_client, observers=[events, interrupt]
    )
    assert result.reason is EndReason.INTERRUPTED
    assert time.monotonic() - interrupted[0] < 0.6  # the rest of an evaluation takes at least 0.75 s
    ends = events.of(EvaluationEnded)
    done = [e for e in ends if e.status is EvalStatus.COMPLETED]
    stopped = [e for e in ends if e.status is EvalStatus.INTERRUPTED]
    assert done and stopped
    for e in stopped:
        steps = [r for r in events.of(Reported) if (r.trial, r.rung) == (e.trial, e.rung)]
        assert 5 <= len(steps) < 20  # it stopped at a report, before its end
    for e in done:  # nothing finished is lost
        assert result.trials[e.trial].evaluations[0].status is EvalStatus.COMPLETED
        assert result.trials[e.trial].value == e.value


def test_a_time_limit_cancels_running_evaluations(dask_client):
    events = Events()
    began = time.monotonic()
    result = hbmagic.tune(
        slow_objective, SPACE, max_budget=9, eta=3, seed=10, time_limit=1.5, executor=dask_client, observers=[events]
    )
    assert result.reason is EndReason.TIME_LIMIT
    assert time.monotonic() - began < 3.5
    stopped = [e for e in events.of(EvaluationEnded) if e.status is EvalStatus.INTERRUPTED]
    assert stopped and all(e.error == "time limit" for e in stopped)


def test_a_trial_stuck_past_the_timeout_fails_and_its_worker_is_restarted(dask_client):
    target = 0

    def objective(trial):
        if trial.id == target:
            time.sleep(120)  # never reports, so only a restart ends it
        return loss(trial.config, trial.budget)

    before = worker_pids(dask_client)
    result = hbmagic.tune(objective, SPACE, max_budget=3, eta=3, seed=11, trial_timeout=1, executor=dask_client)
    assert result.reason is EndReason.COMPLETED
    assert "timed out" in result.trials[target].error
    assert all(t.evaluations[-1].status is EvalStatus.COMPLETED for t in result.trials.values() if t.id != target)
    deadline = time.monotonic() + 30
    while set(worker_pids(dask_client, "ignore").values()) >= set(before.values()):  # until the stuck one is replaced
        assert time.monotonic() < deadline, "the stuck worker's process was not ended"
        time.sleep(0.1)
    wait_for_replacements(dask_client, set(before.values()) - set(worker_pids(dask_client, "ignore").values()))


# -- the journal ---------------------------------------------------------------------------


def test_an_interrupted_study_on_dask_resumes_with_the_states_the_workers_saved(dask_client, tmp_path):
    def objective(trial):
        state = trial.state
        assert trial.start == state.get("epochs", 0)  # a state's bytes came back with what it reached
        state["epochs"] = state.get("epochs", 0)
        for epoch in range(int(trial.start), int(trial.budget)):
            time.sleep(0.01)
            state["epochs"] += 1
            trial.report(loss=loss(trial.config, epoch + 1), epochs=state["epochs"])

    options = dict(max_budget=9, eta=3, seed=15, metric="loss", storage=tmp_path, study="on-dask")
    done: list[EvaluationEnded] = []

    def interrupt(event):
        if isinstance(event, EvaluationEnded) and event.status is EvalStatus.COMPLETED:
            done.append(event)
            if len(done) == 12:
                signal.raise_signal(signal.SIGINT)

    first = hbmagic.tune(objective, SPACE, executor=dask_client, observers=[interrupt], **options)
    assert first.reason is EndReason.INTERRUPTED
    assert all(e.state_saved for e in done)  # the workers' state bytes reached the study folder

    events = Events()
    second = hbmagic.tune(objective, SPACE, executor=dask_client, observers=[events], **options)
    (started,) = events.of(StudyStarted)
    assert started.resumed and started.reused == first.evaluations >= 12
    assert second.reason is EndReason.COMPLETED and second.failures == 0
    assert second.evaluations == 22  # the interrupted evaluations ran again, nothing else
    ran = [e for e in events.of(EvaluationStarted) if e.at >= started.at]  # the journal's past is shown first
    before = {(d.trial, d.rung) for d in done}
    assert ran and not {(e.trial, e.rung) for e in ran} & before
    continued = [e for e in ran if e.start > 0 and (e.trial, e.rung - 1) in before]
    assert continued, "a trial promoted before the interrupt continued from the state saved then"
    for t in second.trials.values():
        assert all(values["epochs"] == step for step, values in t.metrics.items())  # never retrained


# -- the same answer as inline -------------------------------------------------------------


def answer(result: hbmagic.Result, events: Events) -> dict:
    """What must not depend on the executor: the trials, their results, every decision, the best."""
    return {
        "trials": sorted(
            (e.trial, e.iteration, e.bracket, tuple(sorted(e.config.items())), e.seed) for e in events.of(TrialCreated)
        ),
        "results": sorted((e.trial, e.rung, e.status.value, e.value) for e in events.of(EvaluationEnded)),
        "promoted": sorted((e.trial, e.rung, e.rank) for e in events.of(TrialPromoted)),
        "stopped": sorted((e.trial, e.rung, e.value, e.rank, e.of, e.cutoff) for e in events.of(TrialStopped)),
        "rungs": sorted((e.iteration, e.bracket, e.rung, e.promoted, e.cutoff) for e in events.of(RungDone)),
        "brackets": sorted((e.iteration, e.bracket, e.best) for e in events.of(BracketDone)),
        "best": (result.best.trial, result.best.config, result.best.value),
    }  # fmt: skip


@pytest.mark.parametrize("sleep", [False, True], ids=["no-sleep", "random-sleeps"])
def test_dask_gives_the_same_answer_as_inline(dask_client, sleep):
    def objective(trial):
        if sleep:
            time.sleep(random.uniform(0, 0.04))  # so completion order differs from run to run
        for epoch in range(int(trial.start), int(trial.budget)):
            trial.report(loss=loss(trial.config, epoch + 1))

    options = dict(max_budget=9, eta=3, seed=12, iterations=2, metric="loss")
    inline_events, dask_events = Events(), Events()
    inline = hbmagic.tune(objective, SPACE, executor="inline", observers=[inline_events], **options)
    on_dask = hbmagic.tune(objective, SPACE, executor=dask_client, observers=[dask_events], **options)
    assert inline.reason is on_dask.reason is EndReason.COMPLETED
    assert answer(on_dask, dask_events) == answer(inline, inline_events)
    if sleep:
        order = [(e.trial, e.rung) for e in dask_events.of(EvaluationEnded)]
        started = [(e.trial, e.rung) for e in dask_events.of(EvaluationStarted)]
        assert sorted(order) == sorted(started)


# -- devices -------------------------------------------------------------------------------


def test_a_pinned_worker_shows_its_real_gpu_and_the_objective_sees_cuda_0():
    """A worker started with CUDA_VISIBLE_DEVICES=3 (as dask-cuda pins them): events say cuda:3, the body cuda:0."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            env={"CUDA_VISIBLE_DEVICES": "3"},
        ) as cluster,
        Client(cluster) as client,
    ):
        events = Events()

        def objective(trial):
            trial.report(loss=loss(trial.config, trial.budget), sees_cuda_0=float(trial.device == "cuda:0"))

        result = hbmagic.tune(
            objective, SPACE, max_budget=3, eta=3, seed=13, metric="loss", executor=client, observers=[events]
        )
    assert result.reason is EndReason.COMPLETED
    assert events.of(StudyStarted)[0].slots[0].startswith("cuda:3 ")
    assert {e.device for e in events.of(EvaluationStarted)} == {"cuda:3"}
    assert all(r.metrics["sees_cuda_0"] == 1.0 for r in events.of(Reported))


@pytest.mark.gpu
def test_torch_state_is_reloaded_onto_the_workers_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from distributed import Client, LocalCluster

    def objective(trial):
        import torch

        state = trial.state
        if not state:
            state["w"] = torch.zeros(4, device=trial.device)
        assert state["w"].device.type == "cuda"
        state["w"] += trial.budget - trial.start
        trial.report(loss=loss(trial.config, trial.budget), total=float(state["w"].sum().cpu()))

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0",
            env={"CUDA_VISIBLE_DEVICES": "0"},
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        result = hbmagic.tune(objective, SPACE, max_budget=9, eta=3, seed=14, executor=client)
    assert result.reason is EndReason.COMPLETED and result.failures == 0
    for t in result.trials.values():
        assert t.metrics[max(t.metrics)]["total"] == 4 * t.budget
