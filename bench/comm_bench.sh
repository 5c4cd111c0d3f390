#!/usr/bin/env bash
# Collective bandwidth on host memory: keel's Communicator (MPI backend)
# against a plain MPI loop of the same sizes in one run, under mpirun with 2
# and 4 ranks. Prints a bus-bandwidth table per rank count and the ratio
# keel/MPI (see bench/comm_bench.cpp for the definitions).
#
#   bench/comm_bench.sh [--build DIR] [--max-bytes N]
#
# Needs the bench built (ninja -C build-bench comm_bench). Ranks beyond the
# core count are oversubscribed (--oversubscribe), which makes Open MPI
# yield when idle; the table then measures shared cores, not a network.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
build="$root/build-bench"
max_bytes=$((64 << 20))
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --max-bytes) max_bytes="$2"; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--max-bytes N]" >&2; exit 2 ;;
  esac
done

bench="$build/bench/comm_bench"
[[ -x "$bench" ]] || { echo "missing $bench: ninja -C $build comm_bench" >&2; exit 1; }

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
echo "# comm_bench: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cpus" \
     "($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for np in 2 4; do
  echo
  mpirun -np "$np" --oversubscribe "$bench" "$max_bytes"
done
echo
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
