#!/usr/bin/env bash
# The GPU test command: configure with CUDA on, build, run every test under
# CTest (GPU tests run instead of skipping when a device is visible), then
# the CUDA tests again under compute-sanitizer (memcheck, and racecheck when
# KEEL_SANITIZE_ALL=1) when it is installed.
#   scripts/test_gpu.sh                          # build dir: build-cuda/
#   BUILD_DIR=build-gpu JOBS=16 scripts/test_gpu.sh
#   KEEL_SKIP_SETUP=1 scripts/test_gpu.sh        # dependencies already there
# Kernel benchmarks against PyTorch (not run by this script), after it built:
#   bench/gpu_kernels.sh --build build-cuda      # PYTHON=... for a torch with CUDA
#   bench/attention.sh --build build-cuda        # fused attention vs torch SDPA flash
#   bench/gpu_all.sh --build build-cuda          # all of them, and the GPT step on the GPU
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${KEEL_SKIP_SETUP:-0}" = 1 ] || scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build-cuda}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKEEL_CUDA=ON >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS"

if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  nvidia-smi -L
else
  echo "test_gpu: no GPU visible (nvidia-smi); the CUDA tests will skip" >&2
fi

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
status=0
# One GPU: run the CUDA tests alone so their timings and memory are theirs.
(cd "$BUILD_DIR" && ctest --output-on-failure -j "$JOBS" --timeout 900 -E '^Cuda') || status=1
(cd "$BUILD_DIR" && ctest --output-on-failure -j 1 --timeout 900 -R '^Cuda') || status=1

SANITIZER=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || true)}
[ -z "$SANITIZER" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] &&
  SANITIZER=/usr/local/cuda/bin/compute-sanitizer
if [ -n "$SANITIZER" ] && [ -x "$BUILD_DIR/tests/cuda_tests" ]; then
  tools=(memcheck)
  [ "${KEEL_SANITIZE_ALL:-0}" = 1 ] && tools+=(racecheck synccheck initcheck)
  for tool in "${tools[@]}"; do
    echo "== compute-sanitizer --tool $tool cuda_tests"
    # The death test forks; the sanitizer does not follow it.
    "$SANITIZER" --tool "$tool" --error-exitcode 99 --leak-check no \
      "$BUILD_DIR/tests/cuda_tests" --gtest_brief=1 --gtest_filter='-*ForeignPointerAborts*' ||
      status=1
  done
else
  echo "test_gpu: compute-sanitizer not found; skipped the sanitizer pass" >&2
fi
exit $status
