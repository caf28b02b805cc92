"""The journal: every event of a study in SQLite (WAL), and reading it back.

An evaluation's end (and a study's start and end) is committed before the
observer returns, so before the scheduler acts on it. Other events (reports,
decisions, starts) ride along in the next commit, or at most about a second
later: decisions are recomputed from results on resume, and a lost report
costs a point of a learning curve.

Durability: WAL with ``synchronous=NORMAL``. A committed transaction survives
the process being killed (kernel crash, SIGKILL, out-of-memory killer); only a
power loss or an operating-system crash can undo the last commits.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .events import EvaluationEnded, Event, StudyEnded, StudyStarted, event_from_dict, event_to_dict

__all__ = ["Journal", "read_events", "read_meta"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    trial INTEGER,
    data TEXT NOT NULL
);
"""

FLUSH_SECONDS = 1.0
_FORCE = (EvaluationEnded, StudyStarted, StudyEnded)


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    else:
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
    return db


class Journal:
    """An observer writing every event to the study's SQLite file."""

    critical = True  # a journal that cannot write must stop the search, not be dropped

    def __init__(self, path: Path):
        self.path = path
        self.db = connect(path)
        self._pending: list[tuple[str, int | None, str]] = []
        self._last = time.monotonic()

    def __call__(self, event: Event) -> None:
        self._pending.append((type(event).__name__, getattr(event, "trial", None), json.dumps(event_to_dict(event))))
        if isinstance(event, _FORCE) or time.monotonic() - self._last > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT INTO events (type, trial, data) VALUES (?, ?, ?)", rows)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            self._pending = rows + self._pending
            raise
        self._last = time.monotonic()

    def set_meta(self, values: dict[str, Any]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()]
        )
        self.db.execute("COMMIT")

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.db.close()


def read_meta(path: Path) -> dict[str, Any]:
    db = connect(path, readonly=True)
    try:
        return {key: json.loads(value) for key, value in db.execute("SELECT key, value FROM meta")}
    finally:
        db.close()


def read_events(path: Path) -> Iterator[Event]:
    """Every committed event, in order."""
    db = connect(path, readonly=True)
    try:
        for (data,) in db.execute("SELECT data FROM events ORDER BY id"):
            yield event_from_dict(json.loads(data))
    finally:
        db.close()
