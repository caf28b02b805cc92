"""A trial's ``state`` as bytes, and torch state moved between devices.

torch objects go through torch's serialization (loaded straight onto the
trial's device); anything else through cloudpickle. torch is used only when
the objective has already imported it.
"""

from __future__ import annotations

import io
import pickle
import sys
from typing import Any

import cloudpickle

__all__ = ["dumps", "loads", "move_to"]

_ZIP = b"PK\x03\x04"  # torch.save's container


def dumps(state: dict) -> bytes:
    """Serialize a committed state."""
    torch = sys.modules.get("torch")
    if torch is not None:
        buffer = io.BytesIO()
        torch.save(state, buffer, pickle_module=cloudpickle)
        return buffer.getvalue()
    return cloudpickle.dumps(state)


def loads(data: bytes, device: str = "cpu") -> dict:
    """Deserialize a state, putting torch tensors on ``device``."""
    if data[:4] == _ZIP:
        import torch

        return torch.load(io.BytesIO(data), map_location=device, weights_only=False)
    return pickle.loads(data)


def move_to(obj: Any, device: str) -> Any:
    """Move the torch modules, tensors and optimizer states in ``obj`` to ``device``, in place where possible."""
    torch = sys.modules.get("torch")
    if torch is None:
        return obj
    if isinstance(obj, torch.nn.Module):
        return obj.to(device)
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, torch.optim.Optimizer):
        for per_param in obj.state.values():
            for key, value in per_param.items():
                if isinstance(value, torch.Tensor) and key != "step":
                    per_param[key] = value.to(device)
        return obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            obj[key] = move_to(value, device)
        return obj
    if isinstance(obj, list):
        obj[:] = [move_to(v, device) for v in obj]
        return obj
    if isinstance(obj, tuple):
        return type(obj)(move_to(v, device) for v in obj) if not hasattr(obj, "_fields") else obj
    return obj
