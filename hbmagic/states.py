"""Committed ``trial.state`` of trials still alive: in memory, and in the study folder with a journal.

A state is committed only when an evaluation ends normally. Its file is named
after the rung that produced it and written before the journal records the
evaluation; older files of the trial are removed only after that record, so a
crash at any moment leaves the file the journal points to.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import statecodec

__all__ = ["StateStore"]


class StateStore:
    """Where each live trial's last committed state is, and the resource it has reached."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder
        self._live: dict[int, tuple[dict | bytes, float]] = {}  # trial -> (state object or bytes, reached)
        self._disk: dict[int, tuple[int, float]] = {}  # trial -> (rung, reached) of its newest file
        self._files: dict[int, set[int]] = {}  # trial -> rungs of its files in the folder
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    @property
    def persistent(self) -> bool:
        return self.folder is not None

    def _path(self, trial: int, rung: int) -> Path:
        assert self.folder is not None
        return self.folder / f"trial-{trial}-rung-{rung}.state"

    def get(self, trial: int, device: str = "cpu") -> tuple[dict | bytes | None, float]:
        """The committed state (an object, or bytes to load) and what it has reached; (None, 0) if none."""
        if trial in self._live:
            return self._live[trial]
        if trial in self._disk:
            rung, reached = self._disk[trial]
            try:
                return self._path(trial, rung).read_bytes(), reached
            except OSError:
                del self._disk[trial]
        return None, 0

    def as_bytes(self, trial: int) -> bytes | None:
        state, _ = self.get(trial)
        if state is None or isinstance(state, bytes):
            return state
        return statecodec.dumps(state)

    def commit(self, trial: int, rung: int, reached: float, live: dict | None, data: bytes | None) -> bool:
        """Keep a trial's new state; returns whether it was written to the study folder."""
        if live is not None:
            self._live[trial] = (live, reached)
        elif data is not None:
            self._live[trial] = (data, reached)
        else:
            self._live.pop(trial, None)
        self._disk.pop(trial, None)  # an older file no longer matches the committed state
        if self.folder is None or data is None:
            return False
        path = self._path(trial, rung)
        temporary = path.with_suffix(".partial")
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        self._disk[trial] = (rung, reached)
        self._files.setdefault(trial, set()).add(rung)
        return True

    def settle(self, trial: int, rung: int) -> None:
        """After the journal recorded rung ``rung``: the trial's other files are garbage."""
        keep = self._disk.get(trial, (None,))[0]
        for old in self._files.get(trial, set()) - {keep}:
            self._path(trial, old).unlink(missing_ok=True)
            self._files[trial].discard(old)

    def drop_live(self, trial: int) -> None:
        """Forget the in-memory object after an interrupted evaluation: it may be half-trained."""
        self._live.pop(trial, None)

    def free(self, trial: int) -> None:
        """The trial is decided: release its state everywhere."""
        self._live.pop(trial, None)
        self._disk.pop(trial, None)
        for rung in self._files.pop(trial, set()):
            self._path(trial, rung).unlink(missing_ok=True)

    def restore(self, committed: dict[int, tuple[int, float]]) -> None:
        """After a restart: ``committed`` maps each live trial to the rung and budget of its saved state.

        Every other file is garbage (a state written just before a crash, a decided trial's) and goes.
        """
        if self.folder is None:
            return
        self._disk = {t: v for t, v in committed.items() if self._path(t, v[0]).exists()}
        self._files = {t: {rung} for t, (rung, _) in self._disk.items()}
        keep = {self._path(t, rung).name for t, (rung, _) in self._disk.items()}
        for path in self.folder.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(set(self._live) | set(self._disk))
