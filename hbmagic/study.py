"""Studies: a journaled search in a folder, its key, its lock, and managing stored studies.

A study lives in ``<storage>/<name>/``: ``journal.sqlite`` (every event),
``states/`` (committed ``trial.state`` of live trials) and ``lock`` (held by
the process running it). Its key is a hash of the objective's normalized
source, the parsed space, and the options that change the plan or the metric.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import inspect
import json
import os
import re
import shutil
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OptionError
from .events import (
    EvalStatus,
    EvaluationEnded,
    Event,
    StudyEnded,
    StudyStarted,
    TrialCreated,
    TrialPromoted,
    TrialStopped,
)
from .journal import Journal, read_events, read_meta
from .plan import Plan
from .result import Result

__all__ = [
    "StudyBusyError",
    "StudyInfo",
    "StudyMismatchError",
    "default_storage",
    "delete_study",
    "list_studies",
    "load_study",
    "objective_source",
    "study_key",
]

JOURNAL = "journal.sqlite"


class StudyMismatchError(ValueError):
    """A named study exists but was made with another objective, space or plan."""


class StudyBusyError(RuntimeError):
    """Another process has the study open."""


def default_storage() -> Path:
    """``$HBMAGIC_DIR``, else ``.hbmagic/`` in the working folder (made with a ``.gitignore`` inside)."""
    folder = Path(os.environ.get("HBMAGIC_DIR") or Path.cwd() / ".hbmagic")
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# hbmagic's study journals: local results, not source\n*\n")
    return folder


def storage_folder(storage: Any) -> Path:
    """The storage folder for a ``storage`` option (None: the default one)."""
    if storage is None:
        return default_storage()
    folder = Path(storage).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OptionError(f"The value of `storage` is {str(storage)!r}, a file; it must be a folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def objective_source(objective: Any) -> str:
    """The objective's source as a normalized AST (comments and spacing do not count), or its bytecode."""
    target = objective if inspect.isfunction(objective) or inspect.ismethod(objective) else type(objective)
    try:
        return ast.dump(ast.parse(textwrap.dedent(inspect.getsource(target))))
    except (OSError, TypeError, SyntaxError):
        code = getattr(objective, "__code__", None)
        if code is not None:
            return repr((code.co_code, code.co_consts, code.co_names))
        return f"{type(objective).__module__}.{type(objective).__qualname__}"


def study_key(source: str, space: dict[str, str], plan_options: dict[str, Any], seed: int | None) -> dict[str, str]:
    """The key's parts (each hashed) and the key itself, under ``"key"``."""
    parts = {
        "objective": source,
        "space": json.dumps(space, sort_keys=True),
        "plan": json.dumps(plan_options, sort_keys=True, default=str),
        "seed": json.dumps(seed),
    }
    hashed = {name: hashlib.sha256(text.encode()).hexdigest()[:16] for name, text in parts.items()}
    hashed["key"] = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()
    return hashed


def default_name(label: str, key: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-.") or "study"
    return f"{clean[:40]}-{key[:10]}"


class Study:
    """An open study: its folder, lock and journal. Use as a context manager."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.name = folder.name
        self._lock_file: Any = None
        self.journal: Journal | None = None

    @classmethod
    def open(cls, storage: Path, name: str, key: dict[str, str], new: bool, meta: dict[str, Any]) -> Study:
        """Open (or create) study ``name``, refusing one made with another key unless ``new``."""
        study = cls(storage / name)
        study._lock()
        try:
            path = study.folder / JOURNAL
            if path.exists() and new:
                study._clear()
            elif path.exists():
                stored = read_meta(path).get("key", {})
                if stored.get("key") != key["key"]:
                    differs = [p for p in ("objective", "space", "plan", "seed") if stored.get(p) != key[p]]
                    raise StudyMismatchError(
                        f"study {name!r} in {storage} was made with a different {', '.join(differs) or 'setup'}; "
                        "pass new=True (--new) to replace it, or choose another study name"
                    )
            study.journal = Journal(path)
            existing = read_meta(path)
            if not existing:
                study.journal.set_meta({**meta, "key": key, "name": name, "created": time.time()})
        except BaseException:
            study.close()
            raise
        return study

    def _lock(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.folder / "lock", "a+")  # noqa: SIM115 - held open as long as the study is
        for attempt in range(10):  # a moment's patience: `list_studies` probes the lock briefly
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt < 9:
                    time.sleep(0.05)
        else:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StudyBusyError(
                f"study {self.name!r} is open in {holder}; wait for that search to end, or use another study name"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        self._lock_file = handle

    def _clear(self) -> None:
        for item in self.folder.iterdir():
            if item.name == "lock":
                continue
            if item.is_dir():
                shutil.rmtree(item)
            else:
                item.unlink()

    @property
    def states_folder(self) -> Path:
        return self.folder / "states"

    def history(self) -> list[Event]:
        return list(read_events(self.folder / JOURNAL))

    def meta(self) -> dict[str, Any]:
        return read_meta(self.folder / JOURNAL)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- rebuilding a study from its journal ---------------------------------------------------------


def scheduler_state(history: list[Event]) -> dict[str, Any]:
    """What a scheduler needs to continue: results (failed: None), created trials, promotions."""
    results, seen = [], set()
    for e in history:
        if isinstance(e, EvaluationEnded) and e.status is not EvalStatus.INTERRUPTED and (e.trial, e.rung) not in seen:
            seen.add((e.trial, e.rung))
            results.append([e.trial, e.rung, e.value if e.status is EvalStatus.COMPLETED else None])
    created = sorted({e.trial for e in history if isinstance(e, TrialCreated)})
    promotions = sorted({(e.trial, e.rung) for e in history if isinstance(e, TrialPromoted)})
    return {"results": results, "created": created, "promotions": [list(p) for p in promotions]}


def committed_states(history: list[Event], plan: Plan) -> dict[int, tuple[int, float]]:
    """Each live trial's last completed evaluation, if it saved a state: trial -> (rung, budget).

    Trials already decided (stopped, failed, or done with their bracket's last rung) have none.
    """
    last_rung = {b.s: len(b.rungs) - 1 for b in plan.brackets}
    bracket = {e.trial: e.bracket for e in history if isinstance(e, TrialCreated)}
    last: dict[int, tuple[int, float] | None] = {}
    for e in history:
        if isinstance(e, EvaluationEnded) and e.status is not EvalStatus.INTERRUPTED:
            done = e.status is EvalStatus.FAILED or e.rung == last_rung.get(bracket.get(e.trial, -1))
            last[e.trial] = (e.rung, e.budget) if e.state_saved and not done else None
        elif isinstance(e, TrialStopped):
            last[e.trial] = None
    return {trial: where for trial, where in last.items() if where is not None}


def reused_evaluations(history: list[Event]) -> int:
    return len(scheduler_state(history)["results"])


def replay(history: list[Event]) -> Result:
    """The Result of a stored study."""
    result = Result()
    for event in history:
        result(event)
    return result


# -- managing stored studies ---------------------------------------------------------------------


@dataclass(frozen=True)
class StudyInfo:
    name: str
    folder: Path
    status: str  # completed, interrupted, ..., "running" (locked now), "stopped abruptly" (killed)
    evaluations: int
    planned: int | None
    best: float | None
    metric: str | None
    updated: float

    def __str__(self) -> str:
        planned = f"/{self.planned}" if self.planned else ""
        best = "" if self.best is None else f", best {self.metric or 'value'}={self.best:.4g}"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.updated))
        return f"{self.name}: {self.status}, {self.evaluations}{planned} evaluations{best} ({when})"


def _locked(folder: Path) -> bool:
    lock = folder / "lock"
    if not lock.exists():
        return False
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _find(name: str, storage: Any) -> Path:
    root = storage_folder(storage)
    folder = root / name
    if not (folder / JOURNAL).exists():
        names = ", ".join(sorted(p.name for p in root.iterdir() if (p / JOURNAL).exists())) or "none"
        raise OptionError(f"no study named {name!r} in {root}; stored studies: {names}")
    return folder


def list_studies(storage: Any = None) -> list[StudyInfo]:
    """The studies stored in ``storage`` (default: ``default_storage()``), newest first."""
    root = storage_folder(storage)
    infos = []
    for folder in root.iterdir():
        path = folder / JOURNAL
        if not path.exists():
            continue
        history = list(read_events(path))
        result = replay(history)
        ended = [e for e in history if isinstance(e, StudyStarted | StudyEnded)]
        if _locked(folder):
            status = "running"
        elif ended and isinstance(ended[-1], StudyEnded):
            status = ended[-1].reason.value
        else:
            status = "stopped abruptly (resumable)"
        plan = result.plan
        planned = plan.evaluations * plan.iterations if plan is not None and plan.evaluations else None
        best = result.best
        infos.append(
            StudyInfo(
                folder.name,
                folder,
                status,
                result.evaluations,
                planned,
                best.value if best else None,
                result.metric,
                path.stat().st_mtime,
            )
        )
    return sorted(infos, key=lambda info: -info.updated)


def load_study(name: str, storage: Any = None) -> Result:
    """The Result of stored study ``name``."""
    return replay(list(read_events(_find(name, storage) / JOURNAL)))


def delete_study(name: str, storage: Any = None) -> Path:
    """Delete stored study ``name`` (refused while a search has it open); returns its folder."""
    folder = _find(name, storage)
    if _locked(folder):
        raise StudyBusyError(f"study {name!r} is open in a running search; stop it before deleting the study")
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(folder)
    return folder
