"""The live view of a search: the widget in a Jupyter front-end, else text progress."""

from __future__ import annotations

from .events import Observer
from .progress import TextProgress, in_jupyter_kernel

__all__ = ["in_jupyter_kernel", "live_view"]


def live_view(*, widget: bool = True) -> Observer:
    """An observer showing the search as it runs: the widget in a kernel (unless ``widget`` is False), else text."""
    if widget and in_jupyter_kernel():
        from .widget import HyperbandWidget

        return HyperbandWidget.live()
    return TextProgress()
