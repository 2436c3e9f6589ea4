"""Facts about the machine a run trains on: default device, environment record, peak memory."""

from __future__ import annotations

import os
import platform
import resource
from typing import Any

import torch


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def environment(device: torch.device) -> dict[str, Any]:
    """What ``TrainResult.env`` records about the device, torch, threads and Python."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def peak_mem(device: torch.device) -> int:
    """CUDA max allocated bytes, else the process's peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB
