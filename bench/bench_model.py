"""Network forward speed: batch 1 on the CPU (latency), large batches on the GPU (throughput).

python -m bench.bench_model [--variants vrn-light,vrn] [--repeats 10]
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.results_io import save
from facerecon.models import count_parameters, create_model, fold_batchnorm


# Convolution FLOPs of one 192x192 forward, counted by hooks (multiply-add = 2 FLOPs).
def count_flops(model: torch.nn.Module, size: int = 192) -> int:
    total = 0

    def hook(module: torch.nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2 * k * output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d)]  # fmt: skip
    with torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total


def time_forward(model, x, repeats: int, sync=lambda: None) -> float:
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
        sync()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default="vrn-light,vrn")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--gpu-batch", type=int, default=64)
    args = parser.parse_args()
    figures: dict = {"cpu": {}, "gpu": {}}
    for variant in args.variants.split(","):
        model = fold_batchnorm(create_model(variant).eval())
        flops = count_flops(model)
        cpu_model = model.to(memory_format=torch.channels_last)
        x = torch.rand(1, 3, 192, 192).contiguous(memory_format=torch.channels_last)
        seconds = time_forward(cpu_model, x, args.repeats)
        figures["cpu"][variant] = {
            "parameters": count_parameters(model),
            "gflops_per_face": flops / 1e9,
            "batch1_ms": seconds * 1000,
        }
        if torch.cuda.is_available():
            gpu = model.cuda().to(memory_format=torch.channels_last)
            xb = torch.rand(args.gpu_batch, 3, 192, 192, device="cuda")
            xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                seconds = time_forward(gpu, xb, args.repeats, torch.cuda.synchronize)
            figures["gpu"][variant] = {
                "batch": args.gpu_batch,
                "faces_per_s": args.gpu_batch / seconds,
                "tflops_achieved": flops * args.gpu_batch / seconds / 1e12,
            }
    save("model", figures)


if __name__ == "__main__":
    main()
