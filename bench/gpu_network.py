"""Network throughput on a GPU by batch size (issue 18, item 5): faces/s of `forward_logits`
(the service's network call: the 48 x 48 logits, no full volume) in fp16 and bf16.

    python -m bench.gpu_network [--batches 1,8,32,64,128,256] [--out DIR]

Writes DIR/gpu_network.json (default bench/results). Untested here: this project has had no
GPU; bench/gpu.sh runs it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.results_io import machine
from facerecon.models import fold_batchnorm, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", default=str(ROOT / "weights" / "facerecon.pt"))
    parser.add_argument("--batches", default="1,8,32,64,128,256")
    parser.add_argument("--seconds", type=float, default=5.0, help="per batch size and dtype")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    torch.backends.cudnn.benchmark = True
    model, info = load_checkpoint(args.weights, "cpu")
    base = fold_batchnorm(model).cuda().to(memory_format=torch.channels_last)
    figures = {"variant": info["variant"], "machine": machine(), "runs": {}}
    for dtype in (torch.float16, torch.bfloat16):
        net = base.to(dtype)
        for batch in [int(b) for b in args.batches.split(",")]:
            x = torch.rand(batch, 3, 192, 192, device="cuda", dtype=dtype)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                for _ in range(3):
                    net.forward_logits(x)
                torch.cuda.synchronize()
                calls, start = 0, time.perf_counter()
                while time.perf_counter() - start < args.seconds:
                    net.forward_logits(x)[-1].float().cpu()  # as the service: back on the host
                    calls += 1
                elapsed = time.perf_counter() - start
            key = f"{str(dtype).split('.')[-1]}_batch_{batch}"
            figures["runs"][key] = {
                "faces_per_s": round(calls * batch / elapsed, 1),
                "ms_per_batch": round(1000 * elapsed / calls, 2),
                "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            }
            print(key, figures["runs"][key], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_network.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
