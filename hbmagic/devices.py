"""Devices and slots: which GPUs are visible, and how trials are packed onto them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

from .errors import OptionError
from .executors.base import Slot

__all__ = ["discover_gpus", "make_slots", "parse_devices"]


def discover_gpus() -> list[str]:
    """The visible CUDA devices as ``cuda:N``: torch when already imported, else the environment and nvidia-smi."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        except Exception:  # a broken CUDA install: fall through to the tools
            pass
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        return [f"cuda:{i}" for i in range(len(ids))]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [f"cuda:{i}" for i, line in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def parse_devices(devices: str | Sequence[str] | None) -> list[str] | None:
    """``"0,1"``, ``"cuda:0,cuda:1"``, ``"cpu"`` or a list of those, as device names."""
    if devices is None:
        return None
    items = [d.strip() for d in devices.split(",")] if isinstance(devices, str) else [str(d).strip() for d in devices]
    names: list[str] = []
    for item in items:
        if item.isdigit():
            item = f"cuda:{item}"
        if item != "cpu" and not (item.startswith("cuda:") and item[5:].isdigit()):
            raise OptionError(f"The value of `devices` has {item!r}, but each device must be 'cpu', 'cuda:N' or N")
        names.append(item)
    if not names:
        raise OptionError("The value of `devices` is empty; give devices such as '0,1' or 'cpu'")
    return names


def make_slots(devices: list[str] | None, workers: int | None, trials_per_device: int = 1) -> tuple[Slot, ...]:
    """One slot per device and trial on it; with no GPU, ``workers`` CPU slots (1 by default)."""
    if devices is None:
        devices = discover_gpus()
    if not devices or devices == ["cpu"]:
        devices = ["cpu"] * (workers or 1)
        per = 1
    else:
        per = trials_per_device
        if workers is not None and workers != len(devices) * per:
            per = max(1, -(-workers // len(devices)))
    slots: list[Slot] = []
    for device in devices:
        for _ in range(per):
            slots.append(Slot(len(slots), device, f"{device} #{len(slots)}"))
    return tuple(slots)
