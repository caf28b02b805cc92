"""The interface every executor implements, and the slots it owns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ..evaluate import Outcome, Task
from ..events import Reported

__all__ = ["Executor", "Slot"]


@dataclass(frozen=True)
class Slot:
    """A place one evaluation runs at a time: a device, or a share of one."""

    index: int
    device: str  # the real device, as events and the widget show it ("cuda:1", "cpu")
    label: str  # the lane's name ("cuda:1 #0", "cpu #2", "tcp://127.0.0.1:4242 #1")


class Executor(ABC):
    """Runs evaluations on its slots, in the manner of ``concurrent.futures.Executor``.

    ``submit`` returns a Future of an ``Outcome``. Reports reach the runner through
    the ``send`` callable given to ``start``, from any thread. ``in_process``
    says whether a trial's state object can be handed over as is (the same
    interpreter) or must travel as bytes.
    """

    slots: tuple[Slot, ...]
    in_process: bool = True

    def prepare(self, objective: Callable[[Any], Any]) -> None:
        """Check, before anything runs or is shown, that this executor can take ``objective`` (OptionError if not)."""
        return None  # in-process executors take any callable

    @abstractmethod
    def start(self, objective: Callable[[Any], Any], send: Callable[[Reported], None]) -> None:
        """Get ready to run ``objective``; called once before the first ``submit``."""

    @abstractmethod
    def submit(self, task: Task) -> Future[Outcome]:
        """Run ``task`` on slot ``task.slot``."""

    @abstractmethod
    def cancel(self, task: Task, reason: str) -> None:
        """Ask a running evaluation to stop at its next ``report`` (it ends interrupted with ``reason``)."""

    def abandon(self, task: Task, reason: str) -> bool:
        """Give up on an evaluation that does not stop, freeing its slot; False if this executor cannot."""
        return False

    @abstractmethod
    def shutdown(self, wait: bool = True) -> None:
        """Release workers; with ``wait``, after the running evaluations end."""

    def describe(self) -> str:
        """One line for the output: where trials run."""
        devices = sorted({s.device for s in self.slots})
        return (
            f"{type(self).__name__.removesuffix('Executor').lower()}: {len(self.slots)} slot(s) on {', '.join(devices)}"
        )
