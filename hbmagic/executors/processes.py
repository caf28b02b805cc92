"""``processes``: one spawned worker process per slot, replaced when it dies.

Each worker is a fresh interpreter (spawned, never forked: a kernel holds
threads and maybe CUDA). The objective (a cell body, or a function) and the
notebook globals it uses are pickled with cloudpickle once, in ``start``, and
sent to each worker once; an evaluation then sends only its task. A worker is
pinned to its slot's GPU with ``CUDA_VISIBLE_DEVICES``, so it sees that GPU as
``cuda:0`` while the events name the real one. Workers ignore SIGINT (a
Jupyter interrupt signals the kernel's whole process group): the runner stops
their evaluations at the next ``report`` instead.

Workers are started with ``subprocess`` rather than ``multiprocessing``'s
spawn context, which would re-run the kernel's main script in every worker
(and spawn without end from a script lacking ``if __name__ == "__main__"``);
the objective travels by cloudpickle, so workers never need that script.

Each worker talks to the kernel through one socket. The kernel writes tasks,
cancellations and the stop order from a sender thread per worker (a large
state never blocks the caller); a reader thread per worker passes reports
and outcomes on, and learns of the worker's end when the socket closes. A
dead worker fails only the evaluation it was running; a new worker takes its
slot when the slot is next given work. The standard library's
``ProcessPoolExecutor`` is not used: it breaks whole when one worker dies.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import json
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import traceback
import weakref
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from ..capture import routed_output
from ..devices import pin
from ..errors import OptionError
from ..evaluate import EvalStatus, Outcome, Task, evaluate
from ..events import Reported
from .base import Executor, Slot

__all__ = ["ProcessesExecutor"]

Key = tuple[int, int]

# The worker's command line: the kernel's sys.path (so the same modules import), then the socket's descriptor.
_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); from hbmagic.executors.processes import serve; serve()"
)
_LAST_WORDS = 4000  # bytes of a worker's stderr kept to explain its death
_EXECUTORS: weakref.WeakSet[ProcessesExecutor] = weakref.WeakSet()
_HINTS = {
    signal.SIGKILL: "the system's out-of-memory killer sends SIGKILL",
    signal.SIGSEGV: "a crash in native code",
    signal.SIGBUS: "a crash in native code",
    signal.SIGABRT: "native code aborted",
}


# -- the worker process ----------------------------------------------------------------------


def serve() -> None:
    """A worker's main: load the objective once, then run tasks until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked while it was started
    faulthandler.enable(all_threads=False)  # a native crash leaves its Python traceback on stderr, to be quoted
    fd = int(sys.argv[2])
    os.set_inheritable(fd, False)  # programs this worker starts must not hold the kernel's socket open
    conn = Connection(fd)
    writing = threading.Lock()

    def post(message: tuple) -> None:
        with writing:
            conn.send(message)

    try:
        payload = conn.recv_bytes()
    except (EOFError, OSError):
        return
    objective, broken = None, None
    try:
        objective = pickle.loads(payload)
    except BaseException as err:  # a global that cannot be rebuilt here: every evaluation says so
        broken = "the objective could not be loaded in the worker process:\n" + "".join(
            traceback.format_exception(type(err), err, err.__traceback__)
        )
    del payload
    inbox: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
    reasons: dict[Key, str] = {}
    threading.Thread(target=_listen, args=(conn, inbox, reasons), name="hbmagic listener", daemon=True).start()
    with routed_output():
        while (task := inbox.get()) is not None:
            post(("started", task.key))
            if broken is not None:
                outcome = Outcome(EvalStatus.FAILED, {}, error=broken)
            else:
                outcome = evaluate(
                    objective,  # type: ignore[arg-type]
                    task,
                    lambda event: post(("report", event)),
                    lambda key=task.key: reasons.get(key),
                )
            outcome.state = None  # the committed state travels as bytes
            reasons.pop(task.key, None)
            try:
                post(("done", task.key, outcome))
            except Exception as err:  # an outcome that does not pickle: say so rather than hang
                error = f"hbmagic could not send the evaluation's outcome back: {type(err).__name__}: {err}"
                post(("done", task.key, Outcome(EvalStatus.FAILED, {}, error=error, output=outcome.output)))


def _listen(conn: Connection, inbox: queue.SimpleQueue, reasons: dict[Key, str]) -> None:
    """Read the kernel's orders while the main thread evaluates; with the kernel gone, the worker goes too."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        kind = message[0]
        if kind == "task":
            reasons.pop(message[1].key, None)
            inbox.put(message[1])
        elif kind == "cancel":
            reasons[message[1]] = message[2]
        elif kind == "stop":
            inbox.put(None)
            return


# -- the kernel's side ------------------------------------------------------------------------


def _start_process(child: socket.socket, visible: str) -> subprocess.Popen:
    """Start a worker with SIGINT blocked in this thread: the child inherits the mask until it ignores SIGINT."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=visible)
    command = [sys.executable, "-c", _BOOT, json.dumps([str(p) for p in sys.path]), str(child.fileno())]
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(child.fileno(),)
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


class _Worker:
    """One worker process, its socket, and the evaluations sent to it (in order)."""

    def __init__(self, executor: ProcessesExecutor, slot: Slot):
        self.slot = slot
        mine, child = socket.socketpair()
        try:
            self.process = _start_process(child, pin(slot.device))
        finally:
            child.close()
        self.conn = Connection(mine.detach())
        self.last_words = bytearray()  # the end of what the process wrote to its stderr
        self.pump = threading.Thread(target=self._pump, name=f"hbmagic stderr {slot.label}", daemon=True)
        self.pump.start()
        self.tasks: dict[Key, tuple[Task, Future[Outcome]]] = {}
        self.started: set[Key] = set()  # evaluations the process has begun (the others can move to a new one)
        self.outbox: queue.SimpleQueue[tuple | bytes | None] = queue.SimpleQueue()
        self.outbox.put(executor._payload)
        threading.Thread(target=self._deliver, name=f"hbmagic sender {slot.label}", daemon=True).start()
        threading.Thread(target=executor._read, args=(self,), name=f"hbmagic reader {slot.label}", daemon=True).start()

    def _deliver(self) -> None:
        while (message := self.outbox.get()) is not None:
            try:
                if isinstance(message, bytes):
                    self.conn.send_bytes(message)
                else:
                    self.conn.send(message)
            except (OSError, ValueError):  # the worker is gone: its reader says so
                return

    def _pump(self) -> None:
        """Pass the worker's stderr on to the kernel's, keeping its end for a death notice."""
        stream = self.process.stderr
        assert stream is not None
        while chunk := stream.read1(65536):
            with contextlib.suppress(OSError):
                os.write(2, chunk)
            self.last_words += chunk
            del self.last_words[:-_LAST_WORDS]
        stream.close()

    def post(self, message: tuple) -> None:
        self.outbox.put(message)

    def kill(self) -> None:
        self.outbox.put(None)
        if self.process.poll() is None:
            self.process.kill()


def _settle(future: Future[Outcome], outcome: Outcome) -> None:
    with contextlib.suppress(InvalidStateError):  # settled already (an abandoned evaluation)
        future.set_result(outcome)


def _local_device(device: str) -> str:
    """The device as a pinned worker sees it."""
    return "cuda:0" if device.startswith("cuda:") else device


def _how(returncode: int | None) -> str:
    if returncode is None:
        return "closed its connection"
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode)
        except ValueError:
            return f"was killed by signal {-returncode}"
        hint = _HINTS.get(sig)
        return f"was killed by signal {sig.name}" + (f" ({hint})" if hint else "")
    return f"exited with code {returncode}"


def _died(worker: _Worker, task: Task) -> str:
    """Which evaluation, the worker's last words on stderr, and last how it ended (the same for alike deaths)."""
    job = task.job
    lines = [
        f"the worker process running trial {job.trial} at budget {job.budget} on {worker.slot.label} "
        f"(pid {worker.process.pid}) died; the trial fails and a new worker takes the slot"
    ]
    words = bytes(worker.last_words).decode(errors="replace").splitlines()[-20:]
    if words:
        lines += ["its last lines on stderr:", *(f"    {line}" for line in words)]
    lines.append(f"worker process died: it {_how(worker.process.returncode)}")
    return "\n".join(lines)


class ProcessesExecutor(Executor):
    """Runs evaluations in spawned worker processes, one per slot.

    Args:
        slots: The slots; each gets its own process, pinned to the slot's device.
    """

    in_process = False

    def __init__(self, slots: tuple[Slot, ...]):
        if os.name != "posix":
            raise OptionError(
                f"executor='processes' runs on Linux and macOS, not on {sys.platform}; use executor='threads' or 'dask'"
            )
        self.slots = tuple(slots)
        for slot in self.slots:
            pin(slot.device)  # a device beyond CUDA_VISIBLE_DEVICES fails here, not in a worker
        self._lock = threading.RLock()
        self._workers: dict[int, _Worker] = {}  # slot index -> its current worker
        self._alive: set[_Worker] = set()  # every worker whose end has not been handled
        self._closed = True
        self._payload = b""
        _EXECUTORS.add(self)

    # -- the Executor interface ---------------------------------------------------------------

    def prepare(self, objective: Callable[[Any], Any]) -> None:
        try:
            self._prepared = (objective, cloudpickle.dumps(objective))
        except Exception as err:
            raise OptionError(
                "executor='processes' sends the objective and the globals it uses to worker processes, "
                f"but they cannot be pickled ({type(err).__name__}: {err}); use executor='threads', "
                "or build the offending object inside the objective"
            ) from err

    def start(self, objective: Callable[[Any], Any], send: Callable[[Reported], None]) -> None:
        prepared = getattr(self, "_prepared", None)
        if prepared is None or prepared[0] is not objective:
            self.prepare(objective)
        payload = self._prepared[1]
        with self._lock:
            self._payload, self._send, self._closed = payload, send, False
            try:
                for slot in self.slots:
                    self._spawn(slot)
            except BaseException:  # an interrupt, or too many processes: no half-started pool stays behind
                self.shutdown(wait=False)
                raise

    def submit(self, task: Task) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("hbmagic: this ProcessesExecutor is not started, or shut down")
            self._assign(task, future)
        return future

    def cancel(self, task: Task, reason: str) -> None:
        with self._lock:
            worker = self._holder(task.key)
            if worker is not None:
                worker.post(("cancel", task.key, reason))

    def abandon(self, task: Task, reason: str) -> bool:
        """Kill the worker running ``task`` (its evaluation ends with ``reason``); the slot gets a new one."""
        with self._lock:
            worker = self._holder(task.key)
            if worker is None:
                return True
            _, future = worker.tasks.pop(task.key)
            queued = self._retire(worker)
            worker.kill()
            for other, other_future in queued:
                self._assign(other, other_future)
        _settle(future, Outcome(EvalStatus.INTERRUPTED, {}, reason=reason))
        return True

    def shutdown(self, wait: bool = True) -> None:
        """Stop the workers: idle ones at once; busy ones after their evaluations with ``wait``, else killed."""
        with self._lock:
            self._closed = True
            workers = list(self._workers.values())
            self._workers.clear()
            killed: list[Future[Outcome]] = []
            for worker in workers:
                if worker.tasks and not wait:
                    killed += [future for _, future in worker.tasks.values()]
                    worker.tasks.clear()
                    worker.kill()
                else:
                    worker.post(("stop",))
                    worker.outbox.put(None)
        for future in killed:
            _settle(future, Outcome(EvalStatus.INTERRUPTED, {}, reason="shutdown"))
        if wait:
            for worker in workers:
                worker.process.wait()

    def describe(self) -> str:
        devices = sorted({s.device for s in self.slots})
        return f"processes: {len(self.slots)} worker process(es) on {', '.join(devices)}"

    # -- workers ------------------------------------------------------------------------------

    def _spawn(self, slot: Slot) -> _Worker:
        worker = _Worker(self, slot)
        self._workers[slot.index] = worker
        self._alive.add(worker)
        return worker

    def _assign(self, task: Task, future: Future[Outcome]) -> None:
        """Send ``task`` to its slot's worker, starting one if the slot has none (under the lock)."""
        worker = self._workers.get(task.slot) or self._spawn(self.slots[task.slot])
        worker.tasks[task.key] = (task, future)
        worker.post(("task", replace(task, device=_local_device(task.device))))

    def _holder(self, key: Key) -> _Worker | None:
        return next((w for w in self._alive if key in w.tasks), None)

    def _retire(self, worker: _Worker) -> list[tuple[Task, Future[Outcome]]]:
        """Take ``worker`` off its slot; returns the evaluations queued behind the one it runs."""
        if self._workers.get(worker.slot.index) is worker:
            del self._workers[worker.slot.index]
        queued = [entry for key, entry in worker.tasks.items() if key not in worker.started]
        worker.tasks.clear()
        return queued

    # -- the reader threads -------------------------------------------------------------------

    def _read(self, worker: _Worker) -> None:
        """Pass a worker's reports and outcomes on until its socket closes, then handle its end."""
        while True:
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "report":
                self._send(message[1])
            elif kind == "started":
                worker.started.add(message[1])
            elif kind == "done":
                with self._lock:
                    worker.started.discard(message[1])
                    entry = worker.tasks.pop(message[1], None)
                if entry is not None:
                    task, future = entry
                    _settle(future, self._translate(message[2], task))
        self._ended(worker)

    def _ended(self, worker: _Worker) -> None:
        """A worker's process ended: fail what it was running; what waited behind it goes to a new worker."""
        worker.process.wait()
        worker.pump.join(timeout=1)  # programs it started may still hold its stderr open
        worker.conn.close()
        worker.outbox.put(None)
        with self._lock:
            self._alive.discard(worker)
            running = [(t, f) for key, (t, f) in worker.tasks.items() if key in worker.started]
            queued = self._retire(worker)
            if not self._closed:
                for task, future in queued:
                    self._assign(task, future)
                queued = []
        for task, future in running:
            _settle(future, Outcome(EvalStatus.FAILED, {}, error=_died(worker, task)))
        for _, future in queued:
            _settle(future, Outcome(EvalStatus.INTERRUPTED, {}, reason="shutdown"))

    @staticmethod
    def _translate(outcome: Outcome, task: Task) -> Outcome:
        """Name the real device where the worker could only name ``cuda:0``."""
        local = _local_device(task.device)
        if outcome.error and local != task.device:
            prefix = f"out of memory on {local} "
            if outcome.error.startswith(prefix):
                outcome.error = f"out of memory on {task.device} " + outcome.error[len(prefix) :]
        return outcome


@atexit.register
def _kill_workers() -> None:
    """At interpreter exit no worker outlives the kernel."""
    for executor in list(_EXECUTORS):
        with executor._lock:
            workers = list(executor._alive)
        for worker in workers:
            worker.kill()
