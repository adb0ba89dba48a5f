"""Where benchmarks put their figures: bench/results/<name>.json, with the machine they ran on."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

# $FACERECON_BENCH_RESULTS puts them elsewhere (bench/gpu.sh: a GPU run's own folder)
RESULTS = Path(
    os.environ.get("FACERECON_BENCH_RESULTS", Path(__file__).resolve().parent / "results")
)


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def save(name: str, figures: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": machine(), **figures}  # fmt: skip
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return path
