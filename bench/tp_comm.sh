#!/usr/bin/env bash
# Bytes a tensor-parallel GPT-2 124M-shaped step moves per rank, with and
# without sequence parallelism, against Megatron-LM's analytic count, at
# tp = 2 and tp = 4 (see bench/tp_comm_bench.cpp for the model of a ring).
#
#   bench/tp_comm.sh [--build DIR] [extra tp_comm_bench flags]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$(dirname "$here")/build"
if [[ "${1:-}" == "--build" ]]; then build="$2"; shift 2; fi
bench="$build/bench/tp_comm_bench"
[[ -x "$bench" ]] || { echo "missing $bench: cmake --build $build --target tp_comm_bench" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
for np in 2 4; do
  mpirun -np "$np" --oversubscribe "$bench" "$@"
done
