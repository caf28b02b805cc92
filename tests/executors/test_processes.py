"""executor="processes": spawned worker processes that ship the objective once, survive SIGINT,
report live, stop on cancel, and fail only the evaluation of a worker that dies.

Objectives here are defined in a namespace named ``__main__``, as a notebook's
are, so cloudpickle sends them by value with the globals they use.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hbmagic import EndReason, EvalStatus, OptionError, SearchFailed, TrialStatus, tune
from hbmagic.evaluate import Task
from hbmagic.events import EvaluationEnded, EvaluationStarted
from hbmagic.executors.base import Slot
from hbmagic.executors.processes import ProcessesExecutor
from hbmagic.scheduler import Job

SPACE = {"x": "uniform(0, 1)"}


def notebook(source: str, **names) -> dict:
    """Run ``source`` as a notebook cell would: in a namespace whose ``__name__`` is ``__main__``."""
    namespace = {"__name__": "__main__", **names}
    exec(textwrap.dedent(source), namespace)
    return namespace


def wait_until(condition, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def gone(pid: int) -> bool:
    """The process has ended: a zombie, or reaped already."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped before the open, or between it and the read
        return True


def worker_pids() -> set[int]:
    """Worker processes of this process, seen from /proc."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"hbmagic.executors.processes" in cmdline:
            pids.add(int(entry.name))
    return pids


# -- one shared pool of two workers, driven through the Executor interface ----------------------

BEHAVIOUR = """
import ctypes, os, signal, sys, time

def objective(trial):
    do = trial.config["do"]
    if do == "pid":
        return {"pid": os.getpid()}
    if do == "print":
        print("hello from", trial.device, "visible", os.environ.get("CUDA_VISIBLE_DEVICES"))
        return 1.0
    if do == "reports":
        for step in range(trial.config["n"]):
            time.sleep(trial.config.get("pause", 0.02))
            trial.report(pid=os.getpid(), step_value=step)
        return None
    if do == "hang":
        trial.report(pid=os.getpid())
        time.sleep(120)
    if do == "exit":
        os._exit(3)
    if do == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if do == "segv":
        ctypes.string_at(0)
    raise ValueError(do)
"""


class Sink:
    """The ``send`` given to ``start``: collects reports from the watcher threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reports = []

    def __call__(self, event):
        with self.lock:
            self.reports.append(event)

    def of(self, trial):
        with self.lock:
            return [r for r in self.reports if r.trial == trial]


_ids = iter(range(1000, 10**6))


def task(config, slot=0, budget=3, rung=0, start=0, state=None, device="cpu"):
    trial = next(_ids)
    job = Job(trial, 0, 0, rung, budget, start, dict(config), seed=trial)
    return Task(job, start, state, slot, device, metric=None, want_bytes=True)


@pytest.fixture(scope="module")
def pool():
    executor = ProcessesExecutor((Slot(0, "cpu", "cpu #0"), Slot(1, "cpu", "cpu #1")))
    sink = Sink()
    executor.start(notebook(BEHAVIOUR)["objective"], sink)
    yield executor, sink
    executor.shutdown(wait=True)


def run(executor, t, timeout=30):
    return executor.submit(t).result(timeout=timeout)


def pid_of(executor, slot):
    outcome = run(executor, task({"do": "pid"}, slot=slot))
    assert outcome.status is EvalStatus.COMPLETED, outcome.error
    return int(outcome.metrics["pid"])


def test_each_slot_is_its_own_process_and_output_is_captured(pool):
    executor, _ = pool
    pids = {pid_of(executor, 0), pid_of(executor, 1)}
    assert len(pids) == 2 and os.getpid() not in pids
    outcome = run(executor, task({"do": "print"}))
    assert outcome.status is EvalStatus.COMPLETED
    assert outcome.output == "hello from cpu visible -1\n"  # a CPU worker sees no GPU


def test_reports_arrive_while_the_evaluation_runs(pool):
    executor, sink = pool
    t = task({"do": "reports", "n": 20, "pause": 0.05})
    future = executor.submit(t)
    wait_until(lambda: sink.of(t.job.trial), what="the first report")
    assert not future.done()
    outcome = future.result(timeout=30)
    assert outcome.status is EvalStatus.COMPLETED
    steps = [r.metrics["step_value"] for r in sink.of(t.job.trial)]
    assert steps == list(range(20))


def test_cancel_stops_the_evaluation_at_its_next_report(pool):
    executor, sink = pool
    t = task({"do": "reports", "n": 2000, "pause": 0.01}, slot=1)
    future = executor.submit(t)
    wait_until(lambda: sink.of(t.job.trial), what="the first report")
    began = time.monotonic()
    executor.cancel(t, "timeout")
    outcome = future.result(timeout=10)
    assert outcome.status is EvalStatus.INTERRUPTED and outcome.reason == "timeout"
    assert time.monotonic() - began < 2
    assert len(sink.of(t.job.trial)) < 2000


@pytest.mark.parametrize(
    ("do", "how"),
    [
        ("exit", "exited with code 3"),
        ("kill", "was killed by signal SIGKILL (the system's out-of-memory killer sends SIGKILL)"),
        ("segv", "was killed by signal SIGSEGV (a crash in native code)"),
    ],
)
def test_a_dying_worker_fails_only_its_evaluation_and_is_replaced(pool, do, how):
    executor, _ = pool
    old, other = pid_of(executor, 0), pid_of(executor, 1)
    neighbour = executor.submit(task({"do": "reports", "n": 10}, slot=1))
    dying = task({"do": do}, slot=0, budget=9)
    outcome = run(executor, dying)
    assert outcome.status is EvalStatus.FAILED
    lines = outcome.error.splitlines()
    assert f"running trial {dying.job.trial} at budget 9 on cpu #0 (pid {old}) died" in lines[0]
    assert lines[-1] == f"worker process died: it {how}"
    if do == "segv":  # the worker's last words on stderr say where it crashed
        assert "    Fatal Python error: Segmentation fault" in lines
        assert any(line.strip().endswith("in objective") for line in lines)
    else:
        assert len(lines) == 2
    assert neighbour.result(timeout=30).status is EvalStatus.COMPLETED  # the other worker went on
    new = pid_of(executor, 0)
    assert new != old and gone(old)
    assert pid_of(executor, 1) == other


def test_abandon_kills_a_worker_stuck_outside_report_and_frees_its_slot(pool):
    executor, sink = pool
    t = task({"do": "hang"}, slot=1)
    future = executor.submit(t)
    wait_until(lambda: sink.of(t.job.trial), what="the hanging trial's report")
    stuck = int(sink.of(t.job.trial)[0].metrics["pid"])
    executor.cancel(t, "timeout")  # it never reaches report again
    time.sleep(0.2)
    assert not future.done()
    assert executor.abandon(t, "timeout")
    outcome = future.result(timeout=1)
    assert outcome.status is EvalStatus.INTERRUPTED and outcome.reason == "timeout"
    wait_until(lambda: gone(stuck), timeout=10, what="the stuck worker to end")
    assert pid_of(executor, 1) not in (stuck, None)


def test_workers_ignore_sigint_and_keep_their_evaluation(pool):
    executor, sink = pool
    pid = pid_of(executor, 0)
    t = task({"do": "reports", "n": 15, "pause": 0.02})
    future = executor.submit(t)
    wait_until(lambda: sink.of(t.job.trial), what="the first report")
    for _ in range(3):
        os.kill(pid, signal.SIGINT)
        time.sleep(0.03)
    outcome = future.result(timeout=30)
    assert outcome.status is EvalStatus.COMPLETED
    assert len(sink.of(t.job.trial)) == 15
    assert pid_of(executor, 0) == pid


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find the worker")
def test_a_worker_ignores_sigint_from_its_first_instant():
    executor = ProcessesExecutor((Slot(0, "cpu", "cpu #0"),))
    before = worker_pids()
    executor.start(notebook(BEHAVIOUR)["objective"], Sink())
    try:
        (pid,) = worker_pids() - before
        for _ in range(20):  # while the interpreter starts, imports and loads the objective
            os.kill(pid, signal.SIGINT)
            time.sleep(0.01)
        assert pid_of(executor, 0) == pid
    finally:
        executor.shutdown(wait=True)
    assert gone(pid)


# -- whole searches --------------------------------------------------------------------------


def test_globals_are_shipped_once_per_worker_not_per_evaluation(tmp_path):
    log = tmp_path / "unpickled"
    cell = notebook(
        """
        import os

        class Big:
            # A large notebook global whose every unpickling leaves a line in a file.
            def __init__(self, log):
                self.log, self.blob = log, bytes(2_000_000)

            def __setstate__(self, state):
                self.__dict__.update(state)
                with open(self.log, "a") as file:
                    file.write(f"{os.getpid()}\\n")

        data = Big(LOG)

        def objective(trial):
            return trial.config["x"] + len(data.blob) * 0 + os.getpid() * 0
        """,
        LOG=str(log),
    )
    seen = []
    result = tune(
        cell["objective"],
        SPACE,
        max_budget=9,
        seed=0,
        executor="processes",
        workers=2,
        observers=[seen.append],
    )
    assert result.complete and result.evaluations == 22 and result.failures == 0
    pids = log.read_text().split()
    assert len(pids) == len(set(pids)) == 2  # one unpickling in each of the two workers, for 22 evaluations


def test_the_cell_body_and_its_notebook_globals_travel_through_the_magic(tmp_path):
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    ip.run_line_magic("load_ext", "hbmagic")
    log = tmp_path / "unpickled"
    before = set(ip.user_ns)
    try:
        setup = ip.run_cell(
            textwrap.dedent(
                f"""
                import os

                class Big:
                    def __init__(self):
                        self.blob = bytes(1_000_000)

                    def __setstate__(self, state):
                        self.__dict__.update(state)
                        with open({str(log)!r}, "a") as file:
                            file.write(f"{{os.getpid()}}\\n")

                big, scale = Big(), 3.0
                """
            )
        )
        assert setup.success
        cell = ip.run_cell(
            f"%%hyperband --max-budget 9 --seed 0 --executor processes --workers 2 --no-widget "
            f"--metric loss --storage {tmp_path} -o search\n"
            "#| x: uniform(0, 1)\n"
            "report(loss=x * scale + len(big.blob) * 0 + 1 / budget, pid=os.getpid())\n"
        )
        assert cell.success, cell.error_in_exec
        search = ip.user_ns["search"]
        assert search.complete and search.evaluations == 22
        pids = {int(m["pid"]) for t in search.trials.values() for m in t.metrics.values()}
        unpickled = log.read_text().split()
        assert len(pids) == 2 and os.getpid() not in pids
        assert sorted(unpickled) == sorted(map(str, pids))  # the global went to each worker once
    finally:
        for name in set(ip.user_ns) - before:
            del ip.user_ns[name]


def test_torch_state_crosses_processes_between_rungs():
    pytest.importorskip("torch")
    cell = notebook(
        """
        import torch

        def objective(trial):
            st = trial.state
            if not st:
                torch.manual_seed(trial.seed)
                st["model"] = torch.nn.Linear(3, 1).to(trial.device)
                st["opt"] = torch.optim.SGD(st["model"].parameters(), lr=trial.config["x"], momentum=0.9)
                st["epochs"] = torch.zeros((), dtype=torch.long)
            assert int(st["epochs"]) == trial.start, (int(st["epochs"]), trial.start)
            weight = st["model"].weight
            assert weight.device == torch.device(trial.device)
            assert st["opt"].param_groups[0]["params"][0] is weight  # the optimizer still drives the model
            data = torch.ones(8, 3)
            for _ in range(int(trial.start), int(trial.budget)):
                st["opt"].zero_grad()
                loss = st["model"](data).pow(2).mean()
                loss.backward()
                st["opt"].step()
                st["epochs"] += 1
                trial.report(loss=loss.item())
        """
    )
    starts = []
    result = tune(
        cell["objective"],
        SPACE,
        max_budget=9,
        seed=3,
        executor="processes",
        workers=2,
        observers=[lambda e: isinstance(e, EvaluationStarted) and starts.append(e)],
    )
    assert result.complete and result.failures == 0, [t.error for t in result.trials.values() if t.error]
    promoted = [e for e in starts if e.rung > 0]
    assert promoted and all(e.start > 0 for e in promoted)  # every promoted trial resumed, none retrained


def test_a_search_survives_workers_dying_in_three_ways():
    cell = notebook(
        """
        import ctypes, os, signal

        def objective(trial):
            if trial.rung == 0 and trial.id == 2:
                os._exit(3)
            if trial.rung == 0 and trial.id == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            if trial.rung == 0 and trial.id == 7:
                ctypes.string_at(0)
            return trial.config["x"] / trial.budget
        """
    )
    result = tune(cell["objective"], SPACE, max_budget=9, seed=0, executor="processes", workers=2)
    assert result.complete
    failed = {t.id: t.error.splitlines()[-1] for t in result.trials.values() if t.status is TrialStatus.FAILED}
    assert failed == {
        2: "worker process died: it exited with code 3",
        5: "worker process died: it was killed by signal SIGKILL (the system's out-of-memory killer sends SIGKILL)",
        7: "worker process died: it was killed by signal SIGSEGV (a crash in native code)",
    }
    assert result.evaluations == 22  # failed trials are not promoted: others are, in their place
    assert result.best is not None


def test_workers_are_pinned_and_events_name_the_real_gpu(monkeypatch):
    """Without a GPU: slots named after GPUs still pin their workers with CUDA_VISIBLE_DEVICES."""
    pytest.importorskip("torch")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    executor = ProcessesExecutor((Slot(0, "cuda:1", "cuda:1 #0"), Slot(1, "cuda:0", "cuda:0 #1")))
    cell = notebook(
        """
        import os

        def objective(trial):
            print(os.environ["CUDA_VISIBLE_DEVICES"], trial.device)
            if trial.id == 1:
                import torch
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
            return trial.config["x"]
        """
    )
    events = []
    result = tune(cell["objective"], SPACE, max_budget=3, seed=0, executor=executor, observers=[events.append])
    assert result.complete
    device = {(e.trial, e.rung): e.device for e in events if isinstance(e, EvaluationStarted)}
    assert set(device.values()) == {"cuda:0", "cuda:1"}
    for e in events:
        if isinstance(e, EvaluationEnded) and e.status is EvalStatus.COMPLETED:
            visible = {"cuda:1": "7", "cuda:0": "5"}[device[e.trial, e.rung]]
            assert e.output == f"{visible} cuda:0\n"  # the worker sees its GPU as cuda:0
    (oom,) = [e for e in events if isinstance(e, EvaluationEnded) and e.status is EvalStatus.FAILED]
    assert oom.trial == 1
    assert oom.error.startswith(f"out of memory on {device[1, 0]} at budget 1\n")


def test_an_unpicklable_global_is_a_clear_error():
    cell = notebook(
        """
        import threading
        lock = threading.Lock()

        def objective(trial):
            with lock:
                return trial.config["x"]
        """
    )
    with pytest.raises(OptionError, match=r"executor='processes' .* cannot be pickled .*use executor='threads'"):
        tune(cell["objective"], SPACE, max_budget=3, seed=0, executor="processes")


def test_a_global_that_cannot_be_rebuilt_in_a_worker_fails_the_evaluations_clearly():
    cell = notebook(
        """
        class Fragile:
            def __init__(self):
                self.born_in = "the kernel"

            def __setstate__(self, state):
                raise RuntimeError("only lives in the kernel")

        fragile = Fragile()

        def objective(trial):
            return fragile and trial.config["x"]
        """
    )
    with pytest.raises(SearchFailed) as caught:
        tune(cell["objective"], SPACE, max_budget=3, seed=0, executor="processes")
    assert "the objective could not be loaded in the worker process" in str(caught.value)
    assert "RuntimeError: only lives in the kernel" in str(caught.value)


# -- trial timeout, for processes and threads ------------------------------------------------

TIMEOUT_CELL = """
import os, time

def objective(trial):
    if trial.id == 1 and trial.rung == 0:
        with open(PIDS, "a") as file:
            file.write(f"{os.getpid()}\\n")
        if STUCK:
            RELEASE.wait(60) if RELEASE is not None else time.sleep(60)  # never reaches report
        else:
            while True:
                time.sleep(0.01)
                trial.report(trial.config["x"])
    return trial.config["x"]
"""


@pytest.mark.parametrize("executor", ["threads", "processes"])
@pytest.mark.parametrize("stuck", [False, True], ids=["reporting", "stuck"])
def test_trial_timeout_fails_the_evaluation_and_the_search_goes_on(tmp_path, executor, stuck):
    """Reporting: stopped at its next report once past the limit. Stuck: abandoned at 2x the limit + 5 s."""
    release = threading.Event() if executor == "threads" else None
    pids = tmp_path / "pids"
    cell = notebook(TIMEOUT_CELL, PIDS=str(pids), STUCK=stuck, RELEASE=release)
    began = time.monotonic()
    try:
        result = tune(cell["objective"], SPACE, max_budget=3, seed=0, executor=executor, workers=2, trial_timeout=0.5)
    finally:
        if release is not None:
            release.set()  # let the abandoned thread end
    took = time.monotonic() - began
    assert result.complete
    assert result.trials[1].status is TrialStatus.FAILED
    assert result.trials[1].error == "timed out: the evaluation ran longer than trial_timeout=0.5 s"
    assert all(t.status is not TrialStatus.FAILED for i, t in result.trials.items() if i != 1)
    assert took < (12 if stuck else 5)
    if executor == "processes":
        (pid,) = pids.read_text().split()
        if stuck:
            wait_until(lambda: gone(int(pid)), timeout=10, what="the stuck worker to be killed")


# -- a kernel interrupt: the whole process group gets SIGINT ----------------------------------

INTERRUPTED_SCRIPT = """
import json, os, sys, time
import hbmagic

LOG = sys.argv[2]

def objective(trial):
    if not trial.state:
        trial.state["epochs"] = 0
    assert trial.state["epochs"] == trial.start, "state does not match start"
    with open(LOG, "a") as file:
        file.write(json.dumps(["start", os.getpid(), trial.id, trial.rung]) + "\\n")
    for _ in range(int(trial.start), int(trial.budget)):
        time.sleep(0.02)
        trial.state["epochs"] += 1
        trial.report(trial.config["x"] + 1 / trial.state["epochs"])
    with open(LOG, "a") as file:
        file.write(json.dumps(["done", os.getpid(), trial.id, trial.rung]) + "\\n")

if __name__ == "__main__":
    result = hbmagic.tune(objective, {"x": "uniform(0, 1)"}, max_budget=27, seed=4, executor="processes",
                          workers=2, storage=sys.argv[1], study="group")
    pids = {json.loads(line)[1] for line in open(LOG)}
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    print(json.dumps({
        "reason": result.reason.value,
        "completed": sorted([t.id, e.rung] for t in result.trials.values() for e in t.evaluations
                            if e.status.value == "completed"),
        "workers_left": sorted(pid for pid in pids if os.path.exists(f"/proc/{pid}")),
    }))
"""


def test_sigint_to_the_process_group_stops_evaluations_keeps_results_and_resumes(tmp_path):
    from hbmagic.journal import read_events

    script, log, storage = tmp_path / "search.py", tmp_path / "log", tmp_path / "storage"
    script.write_text(textwrap.dedent(INTERRUPTED_SCRIPT))
    command = [sys.executable, str(script), str(storage), str(log)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)

    def done():
        return sum(1 for line in log.read_text().splitlines() if line.startswith('["done"')) if log.exists() else 0

    wait_until(lambda: done() >= 8 or first.poll() is not None, timeout=60, what="eight evaluations")
    os.killpg(first.pid, signal.SIGINT)  # as Jupyter interrupts a kernel: the kernel and its workers
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out
    report = json.loads(out.splitlines()[-1])
    assert report["reason"] == "interrupted"
    assert report["workers_left"] == []
    finished = [json.loads(line) for line in log.read_text().splitlines() if line.startswith('["done"')]
    assert sorted([t, r] for _, _, t, r in finished) == report["completed"]  # nothing that finished is lost
    assert 8 <= len(report["completed"]) < 69

    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith(f"resuming: {len(report['completed'])} of 69 evaluations reused")
    assert json.loads(second.stdout.splitlines()[-1])["reason"] == "completed"
    ended = [e for e in read_events(storage / "group" / "journal.sqlite") if isinstance(e, EvaluationEnded)]
    pairs = [(e.trial, e.rung) for e in ended if e.status is EvalStatus.COMPLETED]
    assert len(pairs) == len(set(pairs)) == 69  # every evaluation of R=27 once: none lost, none rerun
    restarted = [line for line in log.read_text().splitlines() if '"start"' in line]
    assert len(restarted) <= 69 + 2  # at most the two interrupted evaluations ran twice


def test_a_script_without_a_main_guard_runs_its_search_once(tmp_path):
    """Workers never re-run the kernel's main script (multiprocessing's spawn would, once per worker)."""
    script = tmp_path / "plain.py"
    script.write_text(
        textwrap.dedent(
            """
            import hbmagic
            print("top level ran")
            result = hbmagic.tune(lambda t: t.config["x"], {"x": "uniform(0, 1)"}, max_budget=9, seed=0,
                                  executor="processes", workers=2)
            print(result.evaluations, result.reason.value)
            """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["top level ran", "22 completed"]


def test_one_executor_serves_two_searches_and_leaves_no_worker_behind():
    before = worker_pids()
    executor = ProcessesExecutor((Slot(0, "cpu", "cpu #0"), Slot(1, "cpu", "cpu #1")))
    first = tune(lambda trial: trial.config["x"], SPACE, max_budget=3, seed=0, executor=executor)
    second = tune(lambda trial: -trial.config["x"], SPACE, max_budget=3, seed=0, executor=executor)
    assert first.reason is second.reason is EndReason.COMPLETED
    assert first.evaluations == second.evaluations == 6
    assert first.best.config != second.best.config
    wait_until(lambda: worker_pids() <= before, timeout=10, what="the workers to end")
