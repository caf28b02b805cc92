"""Devices and slots: which GPUs are visible, how trials are packed onto them, and how a worker is pinned.

Discovery never imports torch (that takes seconds): it asks torch only when the
objective's code has already imported it, else reads ``CUDA_VISIBLE_DEVICES``,
else asks ``nvidia-smi``, else looks at the driver's ``/proc`` entries.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence

from .errors import OptionError
from .executors.base import Slot

__all__ = ["discover_gpus", "make_slots", "parse_devices", "pin", "visible_ids"]

_PROC_GPUS = "/proc/driver/nvidia/gpus"
_ID = re.compile(r"\d+|(GPU|MIG)-[0-9A-Za-z/-]+")  # an index, or a GPU or MIG instance UUID
HIDDEN = "-1"  # CUDA_VISIBLE_DEVICES of a worker that must see no GPU


def visible_ids(value: str) -> list[str]:
    """The entries of a ``CUDA_VISIBLE_DEVICES`` value as CUDA reads them: up to the first invalid one.

    CUDA stops at an entry it cannot read (``"0,-1,1"`` shows only device 0)
    and at a repeated one; ``""`` and ``"-1"`` hide every GPU.
    """
    ids: list[str] = []
    for item in value.split(","):
        item = item.strip()
        if not _ID.fullmatch(item) or item in ids:
            break
        ids.append(item)
    return ids


def _from_torch() -> list[str] | None:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except Exception:  # a broken CUDA install: let the driver's tools say
        return None


def _from_smi() -> list[str] | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [f"cuda:{i}" for i, _ in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def _from_proc() -> list[str]:
    try:
        return [f"cuda:{i}" for i in range(len(os.listdir(_PROC_GPUS)))]
    except OSError:
        return []


def discover_gpus() -> list[str]:
    """The visible CUDA devices as ``cuda:N``, numbered as the kernel's process sees them."""
    found = _from_torch()
    if found is not None:
        return found
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [f"cuda:{i}" for i in range(len(visible_ids(visible)))]
    found = _from_smi()
    return found if found is not None else _from_proc()


def parse_devices(devices: str | Sequence[str] | None) -> list[str] | None:
    """``"0,1"``, ``"cuda:0,cuda:1"``, ``"cpu"`` or a list of those, as device names."""
    if devices is None:
        return None
    if isinstance(devices, str):
        items = [d.strip() for d in devices.split(",")]
    elif isinstance(devices, Sequence):
        items = [str(d).strip() for d in devices]
    else:
        raise OptionError(
            f"The value of `devices` is {devices!r}, but must be a string such as '0,1' or a list of device names"
        )
    names: list[str] = []
    for item in items:
        if item.isdigit():
            item = f"cuda:{int(item)}"
        if item == "cuda":
            item = "cuda:0"
        if item != "cpu" and not (item.startswith("cuda:") and item[5:].isdigit()):
            raise OptionError(f"The value of `devices` has {item!r}, but each device must be 'cpu', 'cuda:N' or N")
        if item in names:
            raise OptionError(
                f"The value of `devices` lists {item!r} twice; to run several trials on one device "
                "use trials_per_device (--trials-per-device K)"
            )
        names.append(item)
    if not names:
        raise OptionError("The value of `devices` is empty; give devices such as '0,1' or 'cpu'")
    return names


def _check_visible(names: list[str], visible: list[str]) -> None:
    missing = [name for name in names if name != "cpu" and name not in visible]
    if not missing:
        return
    seen = ", ".join(visible) if visible else "none (torch, CUDA_VISIBLE_DEVICES and nvidia-smi found no GPU)"
    raise OptionError(
        f"The value of `devices` has {', '.join(map(repr, missing))}, but the visible GPUs are: {seen}; "
        "use devices='cpu' to run on the CPU"
    )


def make_slots(devices: list[str] | None, workers: int | None, trials_per_device: int = 1) -> tuple[Slot, ...]:
    """The slots of a search: ``trials_per_device`` per device, handed out round-robin.

    Without ``devices`` every visible GPU is used, or the CPU when there is none.
    ``workers``, when given, is the number of slots: it caps the round-robin
    list, or packs more trials per device to reach it. Round-robin order puts
    the first slots on different devices, so a few evaluations spread out.
    """
    if devices is None:
        devices = discover_gpus() or ["cpu"]
    elif any(name != "cpu" for name in devices):
        _check_visible(devices, discover_gpus())
    per = trials_per_device
    if workers is not None:
        per = max(per, -(-workers // len(devices)))
    order = [device for _ in range(per) for device in devices]
    if workers is not None:
        order = order[:workers]
    return tuple(Slot(index, device, f"{device} #{index}") for index, device in enumerate(order))


def pin(device: str) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` that makes a worker process see ``device`` as ``cuda:0`` (no GPU for cpu).

    ``cuda:N`` is numbered as this process sees the GPUs, so under a
    ``CUDA_VISIBLE_DEVICES`` of its own it is that list's N-th entry.
    """
    if not device.startswith("cuda:"):
        return HIDDEN
    index = int(device[5:])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return str(index)
    ids = visible_ids(visible)
    if index >= len(ids):
        raise OptionError(f"device {device!r} is not among the {len(ids)} GPU(s) of CUDA_VISIBLE_DEVICES={visible!r}")
    return ids[index]
