"""Executors: where evaluations run. ``make_executor`` picks one from the options."""

from __future__ import annotations

from typing import Any

from ..devices import discover_gpus, make_slots, parse_devices
from ..errors import OptionError
from .base import Executor, Slot
from .inline import InlineExecutor
from .threads import ThreadsExecutor

__all__ = ["Executor", "InlineExecutor", "Slot", "ThreadsExecutor", "make_executor"]

KINDS = ("inline", "threads", "processes", "dask")


def _is_dask_client(value: Any) -> bool:
    return type(value).__name__ == "Client" and type(value).__module__.startswith("distributed")


def make_executor(
    executor: Any = None,
    *,
    workers: int | None = None,
    devices: Any = None,
    trials_per_device: int = 1,
    cluster: str | None = None,
) -> Executor:
    """The executor the options ask for; by default threads, one slot per GPU, when GPUs are visible, else inline."""
    if isinstance(executor, Executor):
        return executor
    if _is_dask_client(executor):
        from .dask import DaskExecutor

        return DaskExecutor(executor)
    names = parse_devices(devices)
    if executor is None:
        gpus = [d for d in (names or discover_gpus()) if d != "cpu"]
        executor = "threads" if gpus or (workers or 1) > 1 or trials_per_device > 1 else "inline"
    if executor not in KINDS:
        raise OptionError(
            f"The value of `executor` is {executor!r}, but must be one of: {', '.join(KINDS)}, or a distributed.Client"
        )
    if cluster is not None and executor != "dask":
        raise OptionError(f"`cluster` is {cluster!r}, but a cluster address goes with executor='dask'")
    if executor == "inline":
        if (workers or 1) > 1:
            raise OptionError(
                f"The value of `workers` is {workers}, but inline runs one evaluation at a time; use threads"
            )
        return InlineExecutor(names[0] if names else "cpu")
    if executor == "threads":
        return ThreadsExecutor(make_slots(names, workers, trials_per_device))
    if executor == "processes":
        from .processes import ProcessesExecutor

        return ProcessesExecutor(make_slots(names, workers, trials_per_device))
    from .dask import DaskExecutor

    return DaskExecutor.connect(cluster, workers=workers)
