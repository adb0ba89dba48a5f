"""Every benchmark, one after another (about 15 minutes on a 2-core CPU).

python -m bench.run_all      # or: make bench
"""

from __future__ import annotations

import os
import subprocess
import sys

BENCHMARKS = [
    "bench.bench_model",
    "bench.bench_geometry",
    "bench.bench_pipeline",
    "bench.bench_speed",  # issue 18: the pipeline before and after, interleaved
    "bench.bench_engine",
    "bench.bench_registration",
    "bench.bench_server",
]


def main() -> int:
    # Idle OpenMP threads must not spin: on a small shared CPU spinning makes 2 threads
    # several times slower than 1.
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    failed = []
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        if subprocess.run([sys.executable, "-m", name], env=env).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
