"""One side of `bench.bench_speed`: a Reconstructor of whatever `facerecon` is on the path (the
checkout's, or an older commit's), timing the calls its parent sends it.

Protocol: argv[1] is a JSON file of options; then, per line on stdin, an index into the photo
list; per line on stdout, JSON {"stages": {...}, "total_ms": ...}. "rss" on stdin answers the
peak RSS in MB. Imports only `facerecon` (an old checkout has no `bench.speed_worker`).
"""

from __future__ import annotations

import json
import resource
import sys
import time


def main() -> None:
    config = json.loads(open(sys.argv[1]).read())
    import facerecon.reconstructor as rec_module
    from facerecon.reconstructor import ReconstructOptions, Reconstructor

    reconstructor = Reconstructor(config["weights"], device="cpu", threads=config.get("threads"))
    reconstructor.warmup()
    photos = [open(path, "rb").read() for path in config["photos"]]
    views = tuple(tuple(v) for v in config["views"])
    options = ReconstructOptions(views=views, view_size=config["size"])
    reconstructor(photos[0], options=options)  # lazy initialisation
    print(json.dumps({"ready": rec_module.__file__}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "rss":
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(json.dumps({"peak_rss_mb": round(peak, 1)}), flush=True)
            continue
        start = time.perf_counter()
        result = reconstructor(photos[int(command)], options=options)
        wall = (time.perf_counter() - start) * 1000.0
        stages = result.timings_ms
        reply = {"stages": stages, "total_ms": sum(stages.values()), "wall_ms": wall,
                 "vertices": len(result.mesh.vertices)}  # fmt: skip
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
