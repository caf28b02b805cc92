"""``threads``: one worker thread per slot, in the kernel's process.

Threads see the notebook's live objects. A thread cannot be killed: a stuck
evaluation is cancelled at its next ``report``, and one that never reports is
abandoned, its slot given a fresh thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..evaluate import EvalStatus, Outcome, Task, evaluate
from ..events import Reported
from .base import Executor, Slot

__all__ = ["ThreadsExecutor"]


class _Worker:
    def __init__(self, executor: ThreadsExecutor, slot: Slot):
        self.inbox: queue.SimpleQueue[tuple[Task, Future[Outcome]] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(
            target=executor._work, args=(self.inbox,), name=f"hbmagic {slot.label}", daemon=True
        )
        self.thread.start()


class ThreadsExecutor(Executor):
    """Runs evaluations on one daemon thread per slot."""

    def __init__(self, slots: tuple[Slot, ...]):
        self.slots = slots
        self._reasons: dict[tuple[int, int], str | None] = {}
        self._futures: dict[tuple[int, int], Future[Outcome]] = {}
        self._workers: dict[int, _Worker] = {}

    def start(self, objective: Callable[[Any], Any], send: Callable[[Reported], None]) -> None:
        self._objective, self._send = objective, send
        self._workers = {slot.index: _Worker(self, slot) for slot in self.slots}

    def _work(self, inbox: queue.SimpleQueue) -> None:
        while (item := inbox.get()) is not None:
            task, future = item
            key = task.key
            try:
                outcome = evaluate(self._objective, task, self._send, lambda key=key: self._reasons.get(key))
            except BaseException as err:  # an error of hbmagic itself: the runner must hear of it
                if not future.done():
                    future.set_exception(err)
                continue
            if not future.done():  # an abandoned evaluation's future is already failed
                future.set_result(outcome)

    def submit(self, task: Task) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        self._reasons[task.key] = None
        self._futures[task.key] = future
        future.add_done_callback(lambda _, key=task.key: self._forget(key))
        self._workers[task.slot].inbox.put((task, future))
        return future

    def _forget(self, key: tuple[int, int]) -> None:
        self._futures.pop(key, None)
        self._reasons.pop(key, None)

    def cancel(self, task: Task, reason: str) -> None:
        if task.key in self._reasons:
            self._reasons[task.key] = reason

    def abandon(self, task: Task, reason: str) -> bool:
        """Fail the evaluation now and give its slot a new thread; the old one ends when it can."""
        self.cancel(task, reason)
        future = self._futures.get(task.key)
        if future is None or future.done():
            return True
        old = self._workers[task.slot]
        self._workers[task.slot] = _Worker(self, self.slots[task.slot])
        old.inbox.put(None)
        future.set_result(Outcome(EvalStatus.INTERRUPTED, {}, reason=reason))
        return True

    def shutdown(self, wait: bool = True) -> None:
        for worker in self._workers.values():
            worker.inbox.put(None)
        if wait:
            for worker in self._workers.values():
                worker.thread.join()
