#!/usr/bin/env bash
# Data-parallel overhead: the step time of dp=2 against dp=1 on the same
# per-rank batch (each rank one OpenMP thread), so the ratio is what the
# gradient all-reduce costs after overlapping with backward (1.00 = free).
#   bench/dp_overlap.sh [build_dir]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
KEEL="$BUILD/keel"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1

# A corpus of random bytes is enough: the work per step does not depend on it.
head -c 400000 /dev/urandom > "$WORK/text.txt"
"$KEEL" prepare --tokenizer byte --out "$WORK/data" --val-fraction 0 "$WORK/text.txt" >/dev/null

COMMON=(--set model.gpt.n_layer=4 --set model.gpt.n_embd=192 --set model.gpt.n_head=4 --set model.gpt.block_size=128
        --set data.seq_len=128 --set data.shards.train_files="$WORK/data/train_000000.bin" --set data.shards.val_files=
        --set train.steps=24 --set train.log_every=12 --set train.eval_every=0
        --set checkpoint.dir="$WORK/ckpt" --set checkpoint.every=0 --set logging.dir="$WORK/logs"
        --set logging.tensorboard=false --set logging.jsonl=false)

# tokens/s of the last progress line (steps 13-24: the first 12 warm up)
rate() { grep -o '[0-9,]* tok/s' | tail -1 | tr -d ', tok/s'; }

# Per-rank batch 8 in both runs: dp=1 trains batch 8, dp=2 trains batch 16.
one=$("$KEEL" train recipes/gpt/configs/small.pbtxt "${COMMON[@]}" --set data.batch_size=8 | rate)
two=$(mpirun -np 2 --oversubscribe --bind-to none "$KEEL" train recipes/gpt/configs/small.pbtxt \
      "${COMMON[@]}" --set data.batch_size=16 --set parallel.dp=2 | rate)
# Step time = tokens per step / tokens per second.
awk -v one="$one" -v two="$two" 'BEGIN {
  t1 = 8 * 128 / one; t2 = 16 * 128 / two;
  printf "dp=1: %.3f s/step (%d tok/s)\ndp=2: %.3f s/step (%d tok/s, 2 ranks)\nstep time dp=2 / dp=1: %.2f\n", t1, one, t2, two, t2 / t1 }'
