#!/usr/bin/env bash
# The Hyena operator and the Mamba mixer against causal attention at equal
# width (all keel's), forward + backward, T doubling from 256:
# bench/mixer_crossover_bench. On
# the CPU the default stops at 16k (attention there takes seconds per
# call); on a GPU pass --device cuda --tmax 65536.
#
#   bench/mixer_crossover.sh [--build DIR] [-- flags for the bench]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$(dirname "$here")/build"
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "usage: $0 [--build DIR] [-- bench flags]" >&2; exit 2 ;;
  esac
done
bench="$build/bench/mixer_crossover_bench"
[[ -x "$bench" ]] || { echo "missing $bench: cmake --build $build --target mixer_crossover_bench" >&2; exit 1; }
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cpus"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$bench" "${extra[@]}"
