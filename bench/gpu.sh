#!/usr/bin/env bash
# Issue 18, item 5: one command on a fresh GPU machine (H100/H200), about 9 minutes.
#
#   bash bench/gpu.sh [OUT_DIR]        # or OUT=DIR bash bench/gpu.sh
#
# Installs the project (torch's default PyPI wheel carries CUDA), runs the CUDA tests, then
# writes JSON to OUT_DIR (default bench/results/gpu): gpu_network.json (network faces/s by
# batch size, fp16 and bf16), pipeline.json (the whole pipeline per face on the GPU) and
# server.json (the gRPC server's faces/s and p50/p95/p99 under a local load generator at
# concurrency 1..64, RESOURCE_EXHAUSTED counted). Each step has its own time limit so that a
# slow one cannot eat the others'.
#
# UNTESTED: this project has not had a GPU yet; the first run on one should be read as a
# shakedown of this script as much as a measurement.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-bench/results/gpu}}"
mkdir -p "$OUT"
export OMP_WAIT_POLICY=PASSIVE
export FACERECON_BENCH_RESULTS="$OUT"  # bench_pipeline and bench_server write there
status=0
step() {  # step SECONDS NAME COMMAND...: run with a limit, keep going on failure
    local limit=$1 name=$2; shift 2
    echo "== $name (at most ${limit}s)"
    if ! timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"; then
        echo "!! $name failed or timed out" >&2; status=1
    fi
}
# install only what is missing (a machine without a package index keeps what it has)
if ! python3 -c "import facerecon, moderngl, pytest" 2>/dev/null; then
    step 180 install bash -c "python3 -m pip install --quiet --disable-pip-version-check \
        torch==2.13.0 && python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'"
fi
python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA"; print(torch.cuda.get_device_name(0))' \
    || { echo "no CUDA device: nothing to measure" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" 2>&1
step 90 cuda-tests python3 -m pytest -q -p no:cacheprovider -k "cuda or gpu" tests/test_render.py \
    tests/test_reconstructor.py tests/test_models.py
step 90 network python3 -m bench.gpu_network --seconds 4 --out "$OUT"
step 60 pipeline python3 -m bench.bench_pipeline --device cuda --faces 10
step 150 server python3 -m bench.bench_server --device cuda --weights weights/facerecon.pt \
    --concurrency 1,16,64 --calls 400 --seconds 20 --overhead-pairs 5 --rss-calls 50
echo "figures in $OUT"
exit $status
