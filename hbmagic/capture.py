"""Per-trial capture of what an objective prints, also from worker threads.

While a search runs, ``sys.stdout`` and ``sys.stderr`` are replaced by a
router: writes from a thread that is running an evaluation go to that
evaluation's buffer, every other write goes where it went before.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["capture_output", "routed_output"]

_MAX = 64 * 1024  # characters kept per evaluation (the end is kept)


class _Router(io.TextIOBase):
    def __init__(self, target, buffers: dict[int, io.StringIO]):
        self.target = target
        self.buffers = buffers

    def write(self, text: str) -> int:
        buffer = self.buffers.get(threading.get_ident())
        if buffer is None:
            return self.target.write(text)
        return buffer.write(text)

    def flush(self) -> None:
        if threading.get_ident() not in self.buffers:
            self.target.flush()

    def __getattr__(self, name: str):
        return getattr(self.target, name)

    @property
    def encoding(self):  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")

    def isatty(self) -> bool:
        return False


_buffers: dict[int, io.StringIO] = {}
_lock = threading.Lock()
_depth = 0


@contextmanager
def routed_output() -> Iterator[None]:
    """Install the router on ``sys.stdout`` and ``sys.stderr`` (nestable)."""
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1:
            sys.stdout = _Router(sys.stdout, _buffers)
            sys.stderr = _Router(sys.stderr, _buffers)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                if isinstance(sys.stdout, _Router):
                    sys.stdout = sys.stdout.target
                if isinstance(sys.stderr, _Router):
                    sys.stderr = sys.stderr.target


class capture_output:  # noqa: N801 - used like a function: ``with capture_output() as buffer``
    """Send this thread's prints to a fresh buffer while the block runs."""

    __slots__ = ("buffer", "ident")

    def __enter__(self) -> io.StringIO:
        self.buffer, self.ident = io.StringIO(), threading.get_ident()
        _buffers[self.ident] = self.buffer
        return self.buffer

    def __exit__(self, *exc: object) -> None:
        _buffers.pop(self.ident, None)


def tail(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    return text if len(text) <= _MAX else "[...]\n" + text[-_MAX:]
