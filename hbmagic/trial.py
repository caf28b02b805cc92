"""What an objective sees: the Trial, its ``report``, and the ``Stopped`` signal."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .events import Reported

__all__ = ["MetricError", "Stopped", "Trial", "to_metric"]


class Stopped(BaseException):
    """Raised by ``report`` when the evaluation must end now (Stop, interrupt, time limit).

    A ``BaseException``, so ``except Exception`` in a training loop does not swallow it.
    """


class MetricError(TypeError):
    """A reported metric that is not a number."""


def to_metric(name: str, value: Any) -> float:
    """``float(value)`` (tensors and numpy scalars included); NaN and infinities are kept."""
    if isinstance(value, str | bytes) or value is None:
        raise MetricError(f"metric {name!r} is {value!r} ({type(value).__name__}), which is not a number")
    detach = getattr(value, "detach", None)  # a torch tensor: no autograd warning, no graph kept
    if callable(detach):
        value = detach()
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise MetricError(
            f"metric {name!r} is {value!r:.80} ({type(value).__name__}), which is not a number: {err}"
        ) from None


CancelCheck = Callable[[], str | None]


class Trial:
    """One evaluation of one configuration, as the objective sees it.

    Attributes:
        id: The trial's number (its ordinal in plan order).
        config: The hyperparameters, by name.
        seed: Derived from the search seed and the trial's identity only.
        iteration: The Hyperband iteration.
        bracket: The bracket ``s``.
        rung: The rung this evaluation runs at.
        budget: The cumulative resource this evaluation must reach.
        device: The device this trial is pinned to ("cpu", "cuda:1").
        start: The resource that ``state`` has reached (0 when ``state`` is empty).
        state: A dict to fill with what the next rung continues from.
    """

    def __init__(
        self,
        *,
        id: int,  # noqa: A002 - the documented attribute name
        config: dict[str, Any],
        seed: int,
        iteration: int,
        bracket: int,
        rung: int,
        budget: float,
        device: str,
        start: float,
        state: dict | None,
        metric: str | None,
        send: Callable[[Reported], None],
        cancelled: CancelCheck,
    ):
        self.id, self.config, self.seed = id, config, seed
        self.iteration, self.bracket, self.rung = iteration, bracket, rung
        self.budget, self.device, self.start = budget, device, start
        self.state: dict = state if state is not None else {}
        self._metric = metric or "value"
        self._send = send
        self._cancelled = cancelled
        self.reports: list[tuple[float, dict[str, float]]] = []
        self.latest: dict[str, float] = {}

    def report(self, value: Any = None, /, step: float | None = None, **metrics: Any) -> None:
        """Record metrics at ``step`` (default: ``start`` plus the reports so far, this one included).

        ``report(0.12)`` names the value after the searched metric. The last
        report is the evaluation's result. This is also where the evaluation
        is stopped: on Stop, an interrupt or a time limit it raises ``Stopped``.
        """
        if value is not None:
            metrics = {self._metric: value, **metrics}
        if not metrics:
            raise TypeError("report() needs a value, as in report(0.12) or report(val_error=0.12)")
        values = {name: to_metric(name, v) for name, v in metrics.items()}
        if step is None:
            step = self.start + len(self.reports) + 1
        else:
            step = to_metric("step", step)
            if math.isnan(step):
                raise MetricError("report(step=nan): the step must be a number")
        self.reports.append((step, values))
        self.latest.update(values)
        self._send(Reported(self.id, self.rung, step, values))
        reason = self._cancelled()
        if reason is not None:
            raise Stopped(reason)

    def __repr__(self) -> str:
        return f"Trial(id={self.id}, rung={self.rung}, budget={self.budget}, start={self.start}, config={self.config})"
