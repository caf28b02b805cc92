"""``dask``: evaluations on a Dask cluster, through a ``distributed.Client``.

One slot per worker thread, each pinned to its worker (a loose restriction:
should the worker die, the evaluation may run on any other). How the parts
travel, and why:

- The objective goes to each worker once, in a worker plugin: a worker that
  joins later (a replacement for a dead one) gets it too, and no evaluation
  carries it.
- Reports come back as worker events (``Worker.log_event`` to a topic the
  client subscribes to). They ride the worker's batched stream to the
  scheduler, so a report costs no round trip and no polling thread, and they
  arrive in order, before the evaluation's own result. (``distributed.Queue``
  costs a scheduler round trip per report; pub/sub is experimental.)
- A cancellation is a function run on the workers (``Client.run``), which
  marks the evaluation in the plugin; ``report`` reads that mark locally.
- ``trial.state`` travels as bytes, scattered to the evaluation's worker
  beside the task rather than inside it: a task is part of the graph the
  scheduler keeps, and a model's state would make every such task large (Dask
  warns about each one). The client keeps the bytes, so should that worker die
  and the scattered copy go with it, the evaluation is submitted again with a
  new copy, counted as a death like any other.
- A worker that dies mid-evaluation: the scheduler retries the evaluation on
  another worker as its ``distributed.scheduler.allowed-failures`` allows, then
  gives up (``KilledWorker``); the evaluation then fails, the search goes on.
  When no worker is left to retry on, Dask would keep a task restricted to the
  dead worker waiting even after a replacement joins; the executor hears the
  replacement join (its plugin announces it) and submits such an evaluation
  again, counting the deaths it saw against the same allowance.
- A stuck evaluation abandoned after ``trial_timeout``: its worker process is
  ended, and its nanny starts a new one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cloudpickle
import dask
from distributed import Client, KilledWorker, LocalCluster, get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from ..capture import routed_output
from ..devices import discover_gpus, visible_ids
from ..errors import OptionError
from ..evaluate import Outcome, Task, evaluate
from ..events import EvalStatus, Reported
from .base import Executor, Slot

__all__ = ["DaskExecutor"]

CONNECT_TIMEOUT = 10  # seconds to reach a scheduler address
WORKERS_TIMEOUT = 60  # seconds to wait for a cluster's first worker
# Dask's LocalCluster hard-closes a worker's nanny when, lost-worker-timeout (15 s) after a loss, no
# worker of that name is registered: a worker ended twice about that far apart (two stuck evaluations,
# two out-of-memory kills) would never come back. The nanny replaces a lost worker anyway.
KEEP_LOST_WORKERS = {"distributed.deploy.lost-worker-timeout": "3650 days"}


# -- worker side ---------------------------------------------------------------------------


class _Objective(WorkerPlugin):
    """Carries the pickled objective to every worker, loads it there once, and holds the cancellation marks."""

    def __init__(self, payload: bytes, topic: str):
        self.payload: bytes | None = payload
        self.topic = topic
        self.objective: Callable[[Any], Any] | None = None
        self.error: str | None = None
        self.cancelled: dict[str, str] = {}  # submission id -> reason

    def setup(self, worker: Any) -> None:
        self.cancelled = {}
        worker.log_event(self.topic, {"joined": worker.address})  # a replacement worker says it is here
        try:
            self.objective = cloudpickle.loads(self.payload)
        except BaseException as err:  # the evaluations say so; a plugin that raises would stop the worker
            self.error = (
                f"the objective could not be loaded on Dask worker {worker.address}: {type(err).__name__}: {err}\n"
                "Dask workers get copies of the notebook's objects: every module the objective uses must be "
                "installed where the workers run.\n" + "".join(traceback.format_exception(err)[-3:])
            )
        self.payload = None  # the loaded objective is what is kept


def _run_on_worker(plugin: str, topic: str, ident: str, task: Task, state: bytes | None) -> tuple[Outcome, str]:
    """The task Dask runs: one evaluation, its reports sent as worker events; returns (outcome, worker address)."""
    worker = get_worker()
    task = dataclasses.replace(task, state=state)
    loader: _Objective | None = worker.plugins.get(plugin)  # type: ignore[assignment]
    if loader is None or loader.objective is None:
        error = loader.error if loader is not None else f"the objective never reached Dask worker {worker.address}"
        return Outcome(EvalStatus.FAILED, {}, error=error), worker.address

    def send(event: Reported) -> None:
        message = {"id": ident, "trial": event.trial, "rung": event.rung, "step": event.step}
        worker.log_event(topic, {**message, "metrics": event.metrics})

    try:
        with routed_output():
            outcome = evaluate(loader.objective, task, send, lambda: loader.cancelled.get(ident))
    finally:
        loader.cancelled.pop(ident, None)
    outcome.state = None  # the state object stays here; its bytes travel
    return outcome, worker.address


def _mark_cancelled(plugin: str, ident: str, reason: str, dask_worker: Any) -> None:
    loader = dask_worker.plugins.get(plugin)
    if loader is not None:
        loader.cancelled[ident] = reason


def _exit_soon() -> None:
    """End this worker process (its nanny starts a new one), once the reply to this call is on its way."""
    threading.Timer(0.1, os._exit, (1,)).start()


def _probe() -> dict[str, Any]:
    """What a worker sees: its CUDA_VISIBLE_DEVICES and its GPUs, numbered as it sees them."""
    return {"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "gpus": discover_gpus()}


def _devices(probe: dict[str, Any], threads: int) -> list[tuple[str, str]]:
    """(real device, device the objective sees) for each thread of a worker; GPUs round-robin."""
    gpus = probe["gpus"]
    if not gpus:
        return [("cpu", "cpu")] * threads
    ids = visible_ids(probe["visible"]) if probe["visible"] is not None else []
    out = []
    for thread in range(threads):
        local = gpus[thread % len(gpus)]
        index = int(local[5:])
        real = local if index >= len(ids) else (f"cuda:{ids[index]}" if ids[index].isdigit() else ids[index])
        out.append((real, local))
    return out


# -- client side ---------------------------------------------------------------------------


@dataclass
class _Submitted:
    task: Task
    future: Future[Outcome]
    dask_future: Any
    address: str  # the worker it was bound to
    deaths: int = 0  # workers that died under it before it was submitted again
    state: Any = None  # the Dask future of its scattered state


def _default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def _waiting_for_a_worker(keys: list[str]) -> Callable[[Any], dict[str, int]]:
    """A function for the scheduler: which of ``keys`` wait for a worker, with the deaths each saw.

    A closure, so it travels by value: the scheduler needs no hbmagic.
    """

    def check(dask_scheduler: Any) -> dict[str, int]:
        out = {}
        for key in keys:
            ts = dask_scheduler.tasks.get(key)
            if ts is not None and ts.state == "no-worker":
                out[key] = ts.suspicious
        return out

    return check


class DaskExecutor(Executor):
    """Runs evaluations on the workers of a ``distributed.Client``: one slot per worker thread.

    Args:
        client: A connected (not asynchronous) ``distributed.Client``. A client
            given here is left open at the end; one made by ``connect`` is closed,
            with its cluster.
        max_slots: Use at most this many worker threads.
    """

    in_process = False

    def __init__(self, client: Client, max_slots: int | None = None):
        if getattr(client, "asynchronous", False):
            raise OptionError("the distributed.Client is asynchronous; hbmagic needs a synchronous Client")
        self.client = client
        self._owned = contextlib.ExitStack()  # what connect() opened for this search, closed at shutdown
        self._token = uuid.uuid4().hex[:12]
        self._plugin = f"hbmagic-{self._token}"
        self._topic = f"hbmagic-{self._token}"
        self._lock = threading.RLock()
        self._submitted: dict[str, _Submitted] = {}
        self._by_task: dict[tuple[int, int], str] = {}
        self._count = 0
        self._stale = False
        self._background = ThreadPoolExecutor(1, thread_name_prefix="hbmagic-dask")
        self._started = False
        self._closed = False
        self._prepared: tuple[Callable[[Any], Any], bytes] | None = None
        try:
            client.wait_for_workers(1, timeout=WORKERS_TIMEOUT)
        except Exception as err:
            raise OptionError(
                f"the Dask cluster at {client.scheduler.address} has no worker after {WORKERS_TIMEOUT} s ({err})"
            ) from None
        self._max_slots = max_slots
        self.slots: tuple[Slot, ...] = ()
        self._bindings: list[tuple[str, str, str]] = []  # slot -> (worker address, worker name, device it sees)
        self._add_slots(self._workers())

    @classmethod
    def connect(cls, address: str | None = None, *, workers: int | None = None) -> DaskExecutor:
        """Connect to the scheduler at ``address``, or start a LocalCluster of ``workers`` processes on loopback.

        Args:
            address: A Dask scheduler address (``tcp://host:8786``); None starts a cluster here.
            workers: Worker processes (one thread each) of the cluster started here; with an
                address, the most worker threads to use.
        """
        with contextlib.ExitStack() as owned:
            if address is None:
                owned.enter_context(dask.config.set(KEEP_LOST_WORKERS))  # until the cluster is closed
                cluster = LocalCluster(
                    n_workers=workers or _default_workers(),
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",  # scheduler, nannies and workers listen on loopback only
                    dashboard_address="127.0.0.1:0",  # Dask's HTTP server: loopback, any free port
                )
                owned.callback(cluster.close)
                client = Client(cluster)
            else:
                try:
                    client = Client(address, timeout=CONNECT_TIMEOUT)
                except (OSError, TimeoutError, ValueError) as err:
                    raise OptionError(
                        f"could not connect to the Dask scheduler at cluster={address!r}: {err}"
                    ) from None
            owned.callback(client.close)
            executor = cls(client, None if address is None else workers)
            executor._owned = owned.pop_all()
            return executor

    # -- slots ---------------------------------------------------------------------------

    def _workers(self) -> dict[str, dict[str, Any]]:
        return dict(self.client.scheduler_info(n_workers=-1)["workers"])

    def _add_slots(self, workers: dict[str, dict[str, Any]]) -> None:
        """Append a slot for each thread of ``workers`` (none of them bound yet), up to ``max_slots`` in all."""
        probes = self.client.run(_probe, workers=list(workers), on_error="ignore") if workers else {}
        with self._lock:
            bound = {address for address, _, _ in self._bindings}
            slots = list(self.slots)
            for address in sorted(workers, key=lambda a: (str(workers[a].get("name", a)), a)):
                if address in bound:  # another look added it meanwhile
                    continue
                info = workers[address]
                name = str(info.get("name", address))
                probe = probes.get(address, {"visible": None, "gpus": []})
                for thread, (real, local) in enumerate(_devices(probe, int(info.get("nthreads", 1)))):
                    if self._max_slots is not None and len(slots) >= self._max_slots:
                        break
                    label = f"{real} worker {name} #{thread}" if name != address else f"{real} {address} #{thread}"
                    self._bindings.append((address, name, local))  # before the slot is seen
                    slots.append(Slot(len(slots), real, label))
            self.slots = tuple(slots)

    def _rebind(self) -> set[str]:
        """Bind the slots of workers that left to their replacements (same name), else to free threads.

        A worker that joined as no one's replacement (a cluster scaled up) adds
        slots: the runner sees them at once and the widget gets a lane for each.
        Returns the addresses of the workers alive now.
        """
        workers = self._workers()
        with self._lock:
            self._stale = False
            by_name = {str(info.get("name", a)): a for a, info in workers.items()}
            spare = {a: int(info.get("nthreads", 1)) for a, info in workers.items()}
            for address, _, _ in self._bindings:
                if address in spare:
                    spare[address] -= 1
            for index, (address, name, local) in enumerate(self._bindings):
                if address in workers:
                    continue
                target = by_name.get(name)
                if target is None or spare.get(target, 0) <= 0:
                    target = max(spare, key=lambda a: spare[a], default=None)
                if target is None or spare[target] <= 0:
                    self._stale = True  # no worker for it yet: its evaluations may run anywhere meanwhile
                    continue
                spare[target] -= 1
                self._bindings[index] = (target, name, local)
            names = {name for _, name, _ in self._bindings}
            joined = {
                a: info
                for a, info in workers.items()
                if spare[a] == int(info.get("nthreads", 1)) and str(info.get("name", a)) not in names
            }
        if joined and not self._stale:
            self._add_slots(joined)
        return set(workers)

    # -- the Executor interface ----------------------------------------------------------

    def prepare(self, objective: Callable[[Any], Any]) -> None:
        """Pickle the objective now, so an objective Dask cannot ship is refused before anything runs."""
        try:
            self._prepared = (objective, cloudpickle.dumps(objective))
        except Exception as err:
            self.shutdown(wait=False)  # a cluster started for this search goes with it
            raise OptionError(
                "executor='dask' sends the objective and the globals it uses to the Dask workers, but they "
                f"cannot be pickled ({type(err).__name__}: {err}); use executor='threads', or build the "
                "offending object inside the objective"
            ) from err

    def start(self, objective: Callable[[Any], Any], send: Callable[[Reported], None]) -> None:
        if self._prepared is None or self._prepared[0] is not objective:
            self.prepare(objective)
        assert self._prepared is not None
        payload = self._prepared[1]
        self._send = send
        try:
            self._allowed_failures = int(
                self.client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
            )
        except Exception:  # a scheduler that runs no functions: the usual setting
            self._allowed_failures = int(dask.config.get("distributed.scheduler.allowed-failures"))
        self.client.subscribe_topic(self._topic, self._on_event)
        self.client.register_plugin(_Objective(payload, self._topic), name=self._plugin)
        self._started = True

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        """A worker event, on the client's event loop: a report, or a worker that joined."""
        _, message = event
        if "joined" in message:
            if message["joined"] not in {address for address, _, _ in self._bindings}:
                self._request_recovery()
        elif message.get("id") in self._submitted:  # reports of abandoned evaluations are dropped
            self._send(Reported(message["trial"], message["rung"], message["step"], dict(message["metrics"])))

    def submit(self, task: Task) -> Future[Outcome]:
        if self._stale:
            self._rebind()
        future: Future[Outcome] = Future()
        self._launch(task, future, 0)
        return future

    def _launch(self, task: Task, future: Future[Outcome], deaths: int) -> None:
        with self._lock:
            address, _, local = self._bindings[task.slot]
            self._count += 1
            ident = f"{self._token}-{self._count}"
        state = None
        if task.state is not None:
            where = None if self._stale else [address]  # its worker may be gone: then any worker holds it
            state = self.client.scatter(task.state, workers=where, hash=False, timeout=CONNECT_TIMEOUT)
        with self._lock:
            dask_future = self.client.submit(
                _run_on_worker,
                self._plugin,
                self._topic,
                ident,
                dataclasses.replace(task, device=local, state=None),
                state,
                key=f"hbmagic-trial-{task.job.trial}-rung-{task.job.rung}-{ident}",
                workers=[address],
                allow_other_workers=True,  # should its worker die, the retry may run on any other
            )
            self._submitted[ident] = _Submitted(task, future, dask_future, address, deaths, state)
            self._by_task[task.key] = ident
        dask_future.add_done_callback(lambda f, ident=ident: self._done(ident, f))

    def _forget(self, ident: str) -> _Submitted | None:
        with self._lock:
            entry = self._submitted.pop(ident, None)
            if entry is not None and self._by_task.get(entry.task.key) == ident:
                del self._by_task[entry.task.key]
        return entry

    def _done(self, ident: str, dask_future: Any) -> None:
        """On Dask's callback thread: turn the task's end into an Outcome."""
        entry = self._forget(ident)
        if entry is None or entry.future.done():
            return
        try:
            outcome, ran_on = dask_future.result()
            if ran_on != entry.address:
                self._stale = True  # the worker it was bound to is gone
        except KilledWorker as err:
            self._stale = True
            tries = entry.deaths + err.allowed_failures + 1
            outcome = Outcome(
                EvalStatus.FAILED, {}, error=_killed(tries, self._allowed_failures, err.last_worker.address)
            )
        except BaseException as err:
            if dask_future.status == "cancelled" and entry.state is not None and not self._closed:
                # Not cancelled here (that forgets the entry first): its worker died with the state's copy.
                self._stale = True
                with contextlib.suppress(RuntimeError):  # the executor shut down meanwhile
                    self._background.submit(self._launch_again, entry, entry.deaths + 1)
                return
            if dask_future.status == "cancelled":
                outcome = Outcome(EvalStatus.INTERRUPTED, {}, reason="stop")
            else:
                outcome = Outcome(
                    EvalStatus.FAILED, {}, error=f"the Dask cluster could not run this evaluation: {_describe(err)}"
                )
        entry.future.set_result(outcome)

    def _recover(self) -> None:
        """A worker joined: rebind slots, and start again the evaluations Dask left waiting for a lost worker.

        (Dask does not send a task restricted to a worker that left to one that
        joins later, even with ``allow_other_workers``: when every worker died at
        once, such a task would wait forever.) While evaluations bound to a lost
        worker remain, this looks again every second: one submitted just before
        the rebinding may reach the scheduler after this look.
        """
        if self._closed:
            return
        try:
            alive = self._rebind()
            with self._lock:
                orphans = [e for e in self._submitted.values() if e.address not in alive and not e.future.done()]
            if not orphans:
                return
            waiting = self.client.run_on_scheduler(_waiting_for_a_worker([e.dask_future.key for e in orphans]))
        except Exception:  # the cluster is closing
            return
        for entry in orphans:
            deaths = waiting.get(entry.dask_future.key)
            if deaths is None:
                continue  # it runs elsewhere, or has ended, or has not reached the scheduler yet
            ident = self._by_task.get(entry.task.key)
            if ident is None or self._forget(ident) is not entry:
                continue
            entry.dask_future.cancel()
            self._launch_again(entry, deaths + entry.deaths)
        again = threading.Timer(1.0, self._request_recovery)
        again.daemon = True
        again.start()

    def _launch_again(self, entry: _Submitted, deaths: int) -> None:
        """Submit again an evaluation whose worker died under it, unless the cluster allows no more deaths."""
        if deaths > self._allowed_failures:
            error = _killed(deaths, self._allowed_failures, entry.address)
            entry.future.set_result(Outcome(EvalStatus.FAILED, {}, error=error))
            return
        try:
            if self._stale:
                self._rebind()
            self._launch(entry.task, entry.future, deaths)
        except Exception as err:  # no worker took its state in time, or the cluster is closing
            error = f"the Dask cluster could not run this evaluation again: {_describe(err)}"
            if not entry.future.done():
                entry.future.set_result(Outcome(EvalStatus.FAILED, {}, error=error))

    def _request_recovery(self) -> None:
        with contextlib.suppress(RuntimeError):  # the executor shut down meanwhile
            if not self._closed:
                self._background.submit(self._recover)

    def cancel(self, task: Task, reason: str) -> None:
        ident = self._by_task.get(task.key)
        if ident is not None and not self._closed:
            self._background.submit(self._broadcast_cancel, ident, reason)

    def _broadcast_cancel(self, ident: str, reason: str) -> None:
        with contextlib.suppress(Exception):  # the cluster is gone: the evaluation ends with it
            self.client.run(_mark_cancelled, self._plugin, ident, reason, on_error="ignore")

    def abandon(self, task: Task, reason: str) -> bool:
        """Fail the evaluation now; for a timeout, end its worker process, which its nanny replaces.

        A thread cannot be stopped from outside: ending the process is the only way
        to free the worker (and its GPU) from an evaluation that never reports. The
        worker's other evaluations, if it runs several, are retried elsewhere. A
        worker without a nanny is left alone, its thread busy until it ends.
        """
        self.cancel(task, reason)
        ident = self._by_task.get(task.key)
        entry = self._forget(ident) if ident is not None else None
        if entry is None or entry.future.done():
            return True
        if not self._closed:
            self._background.submit(self._drop, entry, reason == "timeout")
        entry.future.set_result(Outcome(EvalStatus.INTERRUPTED, {}, reason=reason))
        return True

    def _drop(self, entry: _Submitted, restart: bool) -> None:
        try:
            entry.dask_future.cancel()
            if restart and self._workers().get(entry.address, {}).get("nanny"):
                # The nanny replaces a worker process that ends, as it does one the OOM killer ends.
                self.client.run(_exit_soon, workers=[entry.address], on_error="ignore")
                self._stale = True
        except Exception:  # the cluster is closing
            pass

    def shutdown(self, wait: bool = True) -> None:
        if self._closed:
            return
        with self._lock:
            entries = list(self._submitted.values())
        if wait:
            for entry in entries:
                entry.future.exception()
        self._closed = True
        with self._lock:
            entries = list(self._submitted.values())
            self._submitted.clear()
            self._by_task.clear()
        for entry in entries:
            if not entry.future.done():
                entry.future.set_result(Outcome(EvalStatus.INTERRUPTED, {}, reason="shutdown"))
        self._background.shutdown(wait=True)
        try:
            if entries:
                self.client.cancel([e.dask_future for e in entries])
            if self._started:
                self.client.unsubscribe_topic(self._topic)
                self.client.unregister_worker_plugin(self._plugin)
        except Exception:  # the cluster is already gone
            pass
        self._owned.close()

    def describe(self) -> str:
        devices = sorted({s.device for s in self.slots})
        workers = len({address for address, _, _ in self._bindings})
        return (
            f"dask: {len(self.slots)} slot(s) on {workers} worker(s) of {self.client.scheduler.address} "
            f"({', '.join(devices)})"
        )


def _killed(tries: int, allowed: int, last: str) -> str:
    return (
        f"the Dask worker running this evaluation died, on each of {tries} tries "
        f"(the cluster's distributed.scheduler.allowed-failures is {allowed}); the last was {last}. "
        "A worker process dies when it is killed (for example by the out-of-memory killer), exits, "
        "or crashes in native code."
    )


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"
