"""Issue 18's before/after: the pipeline of an older commit and of this checkout, interleaved.

    python -m bench.bench_speed [--baseline REV] [--faces 10] [--rounds 3] [--threads 1]

The host's speed drifts by +-20 % within minutes, so runs of different code are only compared
when they alternate: worker processes (`bench/speed_worker.py`), one importing `facerecon`
from a `git worktree` of `--baseline`, one from this checkout (and with `--threads N` one more
of this checkout on N torch threads), each load the shipped weights and warm up; then every
photo goes to each in turn (who goes first rotates), `--rounds` times over the photos.
Options as the CLI's defaults: five 256 x 256 views, the frontal view and the pose. Per stage
and in all: the median over every call; peak RSS of each worker; the ratio of the medians.
Writes bench/results/speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.bench_pipeline import photos
from bench.results_io import save

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "a33d72e"  # main before issue 18's changes
VIEWS = [(-60, 0), (-30, 0), (0, 0), (30, 0), (60, 0)]


class Worker:
    def __init__(self, name: str, source: Path, config: Path):
        env = {**os.environ, "PYTHONPATH": f"{source / 'service'}",
               "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}  # fmt: skip
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "speed_worker.py"), str(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=source,
        )  # fmt: skip
        ready = self._read()
        print(f"{name}: facerecon from {ready['ready']}", flush=True)

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} worker died")
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def summarise(calls: list[dict]) -> dict:
    stages = sorted({k for c in calls for k in c["stages"]})
    return {
        "stage_median_ms": {
            k: round(statistics.median(c["stages"][k] for c in calls if k in c["stages"]), 1)
            for k in stages
        },
        "total_median_ms": round(statistics.median(c["total_ms"] for c in calls), 1),
        "wall_median_ms": round(statistics.median(c["wall_ms"] for c in calls), 1),
        "mesh_vertices_median": int(statistics.median(c["vertices"] for c in calls)),
        "calls": len(calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default=BASELINE, help="git revision to compare with")
    parser.add_argument("--faces", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--weights", default=str(ROOT / "weights" / "facerecon.pt"))
    parser.add_argument("--threads", default="", help="also this checkout with these torch "
                        "threads, e.g. 1 (a worker each, comma-separated)")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        tmp = Path(tmp)
        old = tmp / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old),
                        args.baseline], check=True, capture_output=True)  # fmt: skip
        try:
            paths = []
            for i, data in enumerate(photos(args.faces)):
                paths.append(str(tmp / f"photo{i}.jpg"))
                Path(paths[-1]).write_bytes(data)
            config = tmp / "config.json"
            settings = {"weights": args.weights, "photos": paths, "views": VIEWS, "size": 256}
            config.write_text(json.dumps(settings))
            workers = {"baseline": Worker("baseline", old, config),
                       "current": Worker("current", ROOT, config)}  # fmt: skip
            for threads in [int(t) for t in args.threads.split(",") if t]:
                name = f"current_{threads}_threads"
                own = tmp / f"{name}.json"
                own.write_text(json.dumps({**settings, "threads": threads}))
                workers[name] = Worker(name, ROOT, own)
            calls: dict[str, list[dict]] = {name: [] for name in workers}
            order = list(workers)
            for _ in range(args.rounds):
                for i in range(len(paths)):
                    for name in order:
                        calls[name].append(workers[name].ask(str(i)))
                    order = order[1:] + order[:1]  # who goes first rotates
            rss = {name: w.ask("rss")["peak_rss_mb"] for name, w in workers.items()}
            for worker in workers.values():
                worker.close()
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)],
                           capture_output=True)  # fmt: skip
    figures = {name: {**summarise(c), "peak_rss_mb": rss[name]} for name, c in calls.items()}
    before, after = figures["baseline"], figures["current"]
    save("speed", {
        "baseline_revision": args.baseline,
        "faces": len(paths), "rounds": args.rounds,
        "options": "5 x 256x256 views + frontal + pose (the CLI's defaults)",
        "interleaved": "one call of each per photo, alternating which goes first",
        **figures,
        "speedup_total": round(before["total_median_ms"] / after["total_median_ms"], 2),
        "speedup_by_stage": {k: round(v / after["stage_median_ms"][k], 2)
                             for k, v in before["stage_median_ms"].items()
                             if after["stage_median_ms"].get(k)},
    })  # fmt: skip


if __name__ == "__main__":
    main()
