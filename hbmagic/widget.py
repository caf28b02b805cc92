"""The live widget: a search's bracket board, device lanes, learning curves and Stop button in the notebook.

``HyperbandWidget`` is an observer of the search's events. The whole board
lives in synced traits, so a front-end that asks for the widget's state gets
all of it. While the search runs, changes travel as small batches (the
``delta`` trait: changed cells, new trials, new curve points, at most
``batch`` items together, as JSON text), at most ``1 / interval`` a second,
sent by a background thread so the search never waits for the front-end.

One output carries the widget view, a static HTML board and a plain-text
summary (and the board as JSON for the front-end to draw before the widget's
model is available, such as after a page reload while the cell still runs).
``HyperbandWidget.live()`` shows it with a display id and keeps those forms
up to date, at a lower rate, and final when the search ends.
"""

from __future__ import annotations

import contextvars
import json
import os
import threading
import time
from typing import Any

from ipywidgets import DOMWidget
from traitlets import Dict, List, Unicode

from .board import Board
from .board_html import render_html, render_text
from .events import Event, StudyEnded, StudyStarted

__all__ = ["MODULE_NAME", "MODULE_VERSION", "SEARCH_MIME", "GpuStats", "HyperbandWidget"]

MODULE_NAME = "hbmagic"
MODULE_VERSION = "0.1.0"  # the front-end's version: package.json's "version"
SEARCH_MIME = "application/vnd.hbmagic.search+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
GPU_INTERVAL = 1.0  # seconds between two NVML readings


class HyperbandWidget(DOMWidget):
    """The live view of one search; call it with each event of the search.

    Args:
        interval: Seconds between two widget updates at least (0.1: ten a second at most).
        display_interval: Seconds between two updates of the static HTML and text forms at least;
            it grows when drawing them takes long, so they never cost more than a few percent.
        batch: Items (cells, trials, curve points) one widget update carries at most, all together.
    """

    _model_name = Unicode("HyperbandModel").tag(sync=True)
    _model_module = Unicode(MODULE_NAME).tag(sync=True)
    _model_module_version = Unicode(MODULE_VERSION).tag(sync=True)
    _view_name = Unicode("HyperbandView").tag(sync=True)
    _view_module = Unicode(MODULE_NAME).tag(sync=True)
    _view_module_version = Unicode(MODULE_VERSION).tag(sync=True)

    plan = Dict(help="The plan's rows (iteration, bracket) and their rungs (n, budget).").tag(sync=True)
    info = Dict(help="Study, metric, mode, space and slot labels.").tag(sync=True)
    cells = Dict(help="Every evaluation the search touched, by 'iteration:s:rung:index'.").tag(sync=True)
    trials = Dict(help="Every trial's configuration, bracket and latest state, by id.").tag(sync=True)
    curves = Dict(help="Every trial's (resource, metric) points, by id.").tag(sync=True)
    lanes = List(help="One lane per slot: the trial running there, its progress and last outcomes.").tag(sync=True)
    gpus = Dict(help="Memory and utilization per GPU, where NVML answers.").tag(sync=True)
    summary = Dict(help="Counts against the plan, elapsed, time left and the best so far.").tag(sync=True)
    delta = Unicode(help="The latest batch of changes to cells, trials and curves, as JSON text.").tag(sync=True)

    def __init__(self, *, interval: float = 0.1, display_interval: float = 1.0, batch: int = 500, **kwargs: Any):
        super().__init__(**kwargs)
        if not interval > 0 or not display_interval > 0 or batch < 1:
            raise ValueError(
                f"HyperbandWidget needs interval > 0, display_interval > 0 and batch >= 1; "
                f"got interval={interval!r}, display_interval={display_interval!r}, batch={batch!r}"
            )
        self.interval, self.display_interval, self.batch = interval, display_interval, batch
        self._board = Board()
        # The traits hold the board's own dicts (changed in place; sent as deltas, or whole when asked for).
        self.cells, self.trials, self.curves = self._board.cells, self._board.trials, self._board.curves
        self._lock = threading.Lock()  # the board: events change it, the sending thread reads it
        self._send_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ending = False
        self._handle: Any = None
        self._gpu: GpuStats | None = None
        self.updates = 0  # widget updates sent (batches), for the curious and the tests
        self.on_msg(self._on_front_end_message)

    @classmethod
    def live(cls, **kwargs: Any) -> HyperbandWidget:
        """A new widget, shown now as one output (widget view, HTML board, text summary) with a display id."""
        from IPython.display import display

        widget = cls(**kwargs)
        widget._handle = display(widget, display_id=True)
        return widget

    # -- the observer ------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._board.apply(event)
        kind = type(event)
        if kind is StudyStarted:
            self._ending = False
            self._start()
        elif kind is StudyEnded:
            self._ending = True
            self._refresh_display(final=True)  # before the cell ends: a later update would not reach the output

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        # The thread sends with the cell's context, so its messages belong to the running cell.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._flush_loop,), name="hbmagic-widget", daemon=True
        )
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every change of the ended search was sent; False if ``timeout`` passed first."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    # -- sending -----------------------------------------------------------------------------

    def _on_front_end_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """A front-end model that just connected asks for the whole board again.

        A page reloaded while the search runs builds its model from the first
        update it sees after asking for the state, and drops updates that come
        before the model listens; the whole state sent again after that makes
        up for both.
        """
        if isinstance(content, dict) and content.get("event") == "resync":
            with self._send_lock, self._lock:
                self.send_state()

    def _flush_loop(self) -> None:
        try:
            self._send_until_done()
        except Exception as err:  # a closed comm or a broken kernel connection: the search goes on without us
            import warnings

            warnings.warn(f"hbmagic: the live widget stopped updating: {err!r}", stacklevel=1)

    def _send_until_done(self) -> None:
        gpu_at = 0.0
        shown = time.monotonic()
        display_every = self.display_interval
        while True:
            time.sleep(self.interval)  # the throttle: in between, changes pile up and coalesce
            ending = self._ending
            self._flush()
            if ending and not self._board.pending:
                break
            now = time.monotonic()
            if self._gpu_wanted() and now - gpu_at >= GPU_INTERVAL:
                gpu_at = now
                self._read_gpus()
            if not self._ending and now - shown >= display_every:
                self._refresh_display()
                shown = time.monotonic()
                display_every = max(self.display_interval, 50 * (shown - now))  # at most 2% of the time
        with self._send_lock:
            if self.gpus:
                self.gpus = {}

    def _flush(self) -> None:
        """Send one batch of changes, if there are any."""
        with self._lock:
            if not self._board.pending:
                return
            changes = self._board.take(self.batch)
            summary = self._board.summary(time.time()) if changes.summary else None
            layout = (_copy(self._board.plan), _copy(self._board.info)) if changes.layout else None
        # As JSON text: one fast encoding, instead of ipywidgets walking every item of the batch.
        delta = json.dumps(changes.delta, separators=(",", ":"), allow_nan=False)
        with self._send_lock, self.hold_sync():
            if layout is not None:
                self.plan, self.info = layout
            if changes.lanes is not None:
                self.lanes = changes.lanes
            if summary is not None:
                self.summary = summary
            self.delta = delta
            self.updates += 1

    def _refresh_display(self, final: bool = False) -> None:
        if self._handle is None:
            return
        bundle = self._bundle(copy=not final)
        with self._send_lock:
            self._handle.update(bundle, raw=True)

    # -- GPUs --------------------------------------------------------------------------------

    def _gpu_wanted(self) -> bool:
        return any(lane["device"].startswith("cuda") for lane in self._board.lanes) and not self._ending

    def _read_gpus(self) -> None:
        if self._gpu is None:
            devices = sorted({lane["device"] for lane in self._board.lanes if lane["device"].startswith("cuda")})
            self._gpu = GpuStats(devices)
        stats = self._gpu.read()
        with self._send_lock:
            if stats != self.gpus:
                self.gpus = stats

    # -- the display forms -------------------------------------------------------------------

    def snapshot(self, copy: bool = True) -> dict[str, Any]:
        """The whole board as JSON-ready data (what the static forms are drawn from).

        Without ``copy``, the board's own objects: only while no event arrives (the search ended).
        """
        with self._lock:
            state = self._board.state(time.time())
            return _copy(state) if copy else state

    def _bundle(self, copy: bool = True) -> dict[str, Any]:
        state = self.snapshot(copy)
        state["gpus"] = dict(self.gpus)
        return {
            WIDGET_MIME: {"version_major": 2, "version_minor": 0, "model_id": self._model_id},
            SEARCH_MIME: {"model_id": self._model_id, "version": MODULE_VERSION, "state": state},
            "text/html": render_html(state),
            "text/plain": render_text(state),
        }

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return self._bundle(copy=True)

    def __repr__(self) -> str:
        return f"<hbmagic.HyperbandWidget {self._board.status}: {self._board.evaluations} evaluations>"

    def close(self) -> None:
        self._ending = True
        super().close()


def _copy(value: Any) -> Any:
    """A deep copy of JSON-like data (dicts and lists), cheaper than ``copy.deepcopy``."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class GpuStats:
    """Memory and utilization of CUDA devices through NVML (``nvidia-ml-py``), where it is importable.

    Without NVML, or for a device it cannot find, ``read`` leaves the device
    out, and the lanes show no GPU figures.
    """

    def __init__(self, devices: list[str]):
        self._nvml: Any = None
        self._handles: dict[str, Any] = {}
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # not installed, no driver, no GPU: nothing to show
            return
        self._nvml = pynvml
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        for device in devices:
            ordinal = int(device.split(":", 1)[1]) if ":" in device else 0
            physical = visible[ordinal] if ordinal < len(visible) else str(ordinal)
            try:
                if physical.isdigit():
                    handle = pynvml.nvmlDeviceGetHandleByIndex(int(physical))
                else:
                    handle = pynvml.nvmlDeviceGetHandleByUUID(physical)
            except Exception:
                continue
            self._handles[device] = handle

    def read(self) -> dict[str, dict[str, float | None]]:
        stats: dict[str, dict[str, float | None]] = {}
        for device, handle in self._handles.items():
            try:
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
                try:
                    util: float | None = float(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                except Exception:  # some devices (MIG slices) report memory but no utilization
                    util = None
                stats[device] = {"used": float(memory.used), "total": float(memory.total), "util": util}
            except Exception:
                continue
        return stats
