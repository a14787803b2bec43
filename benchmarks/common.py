"""What every benchmark records next to its numbers: the machine and how busy it was."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> float | None:
    """1-minute load average: other processes on the machine show up here."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def machine(device: torch.device | None = None, **versions: str | None) -> dict[str, Any]:
    """CPU, cores, threads, Python/torch versions, the GPU when ``device`` is CUDA, plus ``versions``."""
    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        **versions,
    }
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
