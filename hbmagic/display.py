"""The live view of a search: the widget in a Jupyter front-end, else text progress."""

from __future__ import annotations

import sys

from .events import Observer

__all__ = ["in_jupyter_kernel", "live_view"]


def in_jupyter_kernel() -> bool:
    """True inside a Jupyter kernel (where a front-end can show widgets), False in a terminal IPython."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def live_view(*, widget: bool = True) -> Observer:
    """An observer showing the search as it runs: the widget in a kernel (unless ``widget`` is False), else text."""
    if widget and in_jupyter_kernel():
        from .widget import HyperbandWidget

        return HyperbandWidget.live()
    from .progress import TextProgress

    return TextProgress()
