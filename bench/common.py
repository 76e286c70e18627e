"""What every benchmark reports about the machine it ran on (figures are only comparable within one)."""

from __future__ import annotations

import os
import platform
from typing import Any


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory and the versions of the libraries on the measured paths."""
    import cv2
    import numpy as np
    import pyarrow
    import ray
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
            "mem_gb": round(mem / 2**20, 1), "python": platform.python_version(), "platform": platform.platform(),
            "ray": ray.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "pyarrow": pyarrow.__version__, "opencv": cv2.__version__, "cuda_available": torch.cuda.is_available()}
