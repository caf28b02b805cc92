"""``inline``: each evaluation runs in the caller's thread, one at a time."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..evaluate import Outcome, Task, evaluate
from ..events import Reported
from .base import Executor, Slot

__all__ = ["InlineExecutor"]


class InlineExecutor(Executor):
    """Runs each evaluation inside ``submit``, in the kernel's own thread."""

    def __init__(self, device: str = "cpu"):
        self.slots = (Slot(0, device, f"{device} #0"),)
        self._reason: str | None = None

    def start(self, objective: Callable[[Any], Any], send: Callable[[Reported], None]) -> None:
        self._objective, self._send = objective, send

    def submit(self, task: Task) -> Future[Outcome]:
        self._reason = None
        future: Future[Outcome] = Future()
        future.set_result(evaluate(self._objective, task, self._send, lambda: self._reason))
        return future

    def cancel(self, task: Task, reason: str) -> None:
        self._reason = reason

    def shutdown(self, wait: bool = True) -> None:
        pass
