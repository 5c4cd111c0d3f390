#!/usr/bin/env bash
# The test command: set up, configure, build, run every test.
#   scripts/test.sh                # build dir: build/
#   BUILD_DIR=build-nocuda KEEL_CUDA=OFF scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKEEL_CUDA="${KEEL_CUDA:-AUTO}" >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS"
# OpenMP threads: keep tests from oversubscribing a small machine.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
cd "$BUILD_DIR" && ctest --output-on-failure -j "$JOBS" --timeout 600
