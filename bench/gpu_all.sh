#!/usr/bin/env bash
# Every GPU benchmark in one command, each keel against PyTorch on the same
# GPU: memory-bound kernels (bench/gpu_kernels.sh), fused attention
# (bench/attention.sh), the GPT training step in fp32 and bf16
# (bench/gpt_step.sh --device cuda), and the Hyena/Mamba/attention crossover
# (bench/mixer_crossover.sh). Builds the benchmarks first.
#
#   bench/gpu_all.sh [--build DIR]        # default build-cuda (scripts/test_gpu.sh's)
#   keel-bundle/bench/gpu_all.sh --build keel-bundle   # from a scripts/bundle.sh bundle
#
# PYTHON= a python whose torch has CUDA (default python3). The tables go to
# stdout; paste them into bench/README.md with the GPU's name.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
build="$root/build-cuda"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    *) echo "usage: $0 [--build DIR]" >&2; exit 2 ;;
  esac
done
# A build folder is brought up to date; a bundle (scripts/bundle.sh: its
# bench/ holds wrappers, no CMakeCache.txt) is used as it is.
if [[ -f "$build/CMakeCache.txt" || ! -x "$build/bench/gpu_kernels_bench" ]]; then
  [[ -f "$build/CMakeCache.txt" ]] ||
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKEEL_CUDA=ON >/dev/null
  cmake --build "$build" --target gpu_kernels_bench attention_bench gpt_step_bench \
    mixer_crossover_bench
fi
command -v nvidia-smi >/dev/null && nvidia-smi -L
status=0
echo "## memory-bound kernels"
"$here/gpu_kernels.sh" --build "$build" || status=1
echo "## fused attention"
"$here/attention.sh" --build "$build" || status=1
for precision in fp32 bf16; do
  echo "## GPT training step, $precision"
  PYTHON="${PYTHON:-python3}" "$here/gpt_step.sh" --build "$build" --device cuda \
    --precision "$precision" || status=1
done
echo "## Hyena and Mamba mixers against causal attention (forward + backward)"
"$here/mixer_crossover.sh" --build "$build" -- --device cuda --width 768 --heads 12 \
  --tmax 65536 || status=1
exit $status
