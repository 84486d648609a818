#!/usr/bin/env bash
# On a lent GPU machine, in the project root: the GPU section of `make bench`, its report and logs
# left under $OUT (they come back). Prepared here first with `make gpu-stage` (tools/gpu/prepare.sh).
# One call may carry 64 MiB, so it takes two calls, the second at once (the machine is given back
# after 30 s idle, and /tmp/g with it):
#   1. run  command="bash tools/gpu/run.sh"  carry=[".gpu-a"]  timeout_s=120   the CUDA provider to /tmp/g
#   2. run  command="bash tools/gpu/run.sh"  carry=[".gpu-b"]  timeout_s=600   the bench (~4 minutes)
# Arguments go to `python -m tools.bench.gpu` (e.g. --quick: ~2 minutes); GPU_BENCH_LIMIT_S bounds it.
# Each figure is also printed as it is measured ("gpu: ..." lines of bench-gpu.log), so a run cut
# short still tells what it measured.
set -uo pipefail
out=${OUT:-reports}
mkdir -p "$out"
if [[ -f .gpu-a/cuda_provider.so.xz ]]; then
  mkdir -p /tmp/g && cp .gpu-a/cuda_provider.so.xz /tmp/g/ && echo "CUDA provider in /tmp/g"
fi
if [[ ! -f .gpu-b/unpack.sh ]]; then
  echo "no .gpu-b/ here: carry it in the next call (the first call only places the CUDA provider)"
  exit 0
fi
if [[ ! -f /tmp/g/cuda_provider.so.xz ]]; then
  echo "no /tmp/g/cuda_provider.so.xz: this machine is fresh; redo call 1 (carry .gpu-a), then call 2 at once" >&2
  exit 1
fi
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
# Installs onnxruntime-gpu and every wheel of .gpu-b/whl (facenet-pytorch too) under /tmp/ortsite.
source .gpu-b/unpack.sh || exit 1
export FACESEARCH_COMMIT PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1
FACESEARCH_COMMIT=$(cat .gpu-b/commit.txt)
timeout "${GPU_BENCH_LIMIT_S:-540}" python3 -m tools.bench.gpu --lfw-dir .gpu-b/inputs/lfw \
  --frames-dir .gpu-b/inputs/frames --out "$out" "$@" 2>&1 | tee "$out/bench-gpu.log"
status=${PIPESTATUS[0]}
echo "exit status $status; files in $out: $(ls "$out" | tr '\n' ' ')"
exit "$status"
