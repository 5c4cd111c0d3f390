#!/usr/bin/env bash
# Step time of tensor parallelism on this machine: the small GPT recipe at
# tp = 2 (one thread per rank, with and without sequence parallelism)
# against tp = 1 (two threads), the same global batch and steps, in one run;
# prints tokens/s and the ratio to tp = 1. On 2 cores the ratio is expected
# below 1 (the same FLOPs plus communication); it is here to catch
# regressions.
#
#   bench/tp_step.sh [--build DIR] [--steps N]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
build="$root/build"
steps=60
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--steps N]" >&2; exit 2 ;;
  esac
done
keel="$build/keel"
[[ -x "$keel" ]] || { echo "missing $keel: cmake --build $build --target keel_cli" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
for i in $(seq 3000); do echo "In the beginning God created the heaven and the earth. $((i % 97))"; done > "$work/text.txt"
"$keel" prepare --tokenizer byte --out "$work" --val-fraction 0 "$work/text.txt" > /dev/null
common=(--set data.shards.train_files="$work/train_000000.bin" --set data.shards.val_files=
        --set train.steps="$steps" --set train.log_every="$steps" --set train.eval_every=0
        --set checkpoint.dir="$work/ckpt" --set checkpoint.every=0
        --set logging.jsonl=false --set logging.tensorboard=false)
cfg="$root/recipes/gpt/configs/small.pbtxt"
rate() { sed -n "s/^step *$steps\/$steps .*| \([0-9,]*\) tok\/s.*/\1/p" | tr -d ,; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
one=$(OMP_NUM_THREADS=2 "$keel" train "$cfg" "${common[@]}" | rate)
two=$(OMP_NUM_THREADS=1 mpirun -np 2 -x OMP_NUM_THREADS "$keel" train "$cfg" "${common[@]}" \
      --set parallel.tp=2 | rate)
sp=$(OMP_NUM_THREADS=1 mpirun -np 2 -x OMP_NUM_THREADS "$keel" train "$cfg" "${common[@]}" \
     --set parallel.tp=2 --set parallel.sequence_parallel=true | rate)
echo "# tp_step: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cpus, small recipe, $steps steps"
printf "%-28s %10s %7s\n" layout "tok/s" ratio
printf "%-28s %10s %7s\n" "tp=1, 2 threads" "$one" 1.00
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf "%-28s %10s %7s\n" "tp=2, 1 thread per rank" "$two" "$(ratio "$two" "$one")"
printf "%-28s %10s %7s\n" "tp=2 + sp, 1 thread per rank" "$sp" "$(ratio "$sp" "$one")"
