#!/usr/bin/env bash
# Training speed and quality of the small Hyena and Mamba recipes against
# the small GPT (recipes/{gpt,hyena,mamba}/configs/small.pbtxt: width 192,
# the same data, batch, optimiser and schedule), trained for the same steps
# on the King James Bible in one run: tokens/s of the last logged interval,
# the final validation loss (nats per byte), and the ratios to gpt.
#
#   bench/family_train.sh [--build DIR] [--steps N] [--threads N]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
build="$root/build"
steps=300
threads=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--steps N] [--threads N]" >&2; exit 2 ;;
  esac
done
keel="$build/keel"
[[ -x "$keel" ]] || { echo "missing $keel: cmake --build $build --target keel_cli" >&2; exit 1; }
command -v bible >/dev/null || { echo "needs bible-kjv (scripts/setup.sh)" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
bible -l10000 gen1:1-rev22:21 > "$work/kjv.txt"
"$keel" prepare --tokenizer byte --out "$work" --val-fraction 0.01 "$work/kjv.txt" > /dev/null
common=(--set data.shards.train_files="$work/train_000000.bin"
        --set data.shards.val_files="$work/val_000000.bin"
        --set train.steps="$steps" --set train.log_every=20 --set train.eval_every="$steps"
        --set checkpoint.dir="$work/ckpt" --set checkpoint.every=0
        --set logging.jsonl=false --set logging.tensorboard=false)
run() {  # family -> "tok/s val_loss"
  rm -rf "$work/ckpt"
  OMP_NUM_THREADS=$threads "$keel" train "$root/recipes/$1/configs/small.pbtxt" "${common[@]}" \
    > "$work/$1.log"
  local rate val
  rate=$(sed -n 's/^step .*| \([0-9,]*\) tok\/s.*/\1/p' "$work/$1.log" | tail -1 | tr -d ,)
  val=$(sed -n "s/^step $steps | val loss //p" "$work/$1.log")
  echo "$rate $val"
}
read -r g_rate g_val < <(run gpt)
echo "# family_train: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cpus, $threads threads, small recipes, $steps steps"
printf "%-8s %10s %10s %12s %14s\n" family "tok/s" "val loss" "tok/s / gpt" "val loss / gpt"
printf "%-8s %10s %10s %12s %14s\n" gpt "$g_rate" "$g_val" 1.00 1.000
for family in hyena mamba; do
  read -r rate val < <(run $family)
  awk -v f=$family -v a="$rate" -v b="$g_rate" -v c="$val" -v d="$g_val" \
    'BEGIN { printf "%-8s %10s %10s %12.2f %14.3f\n", f, a, c, a / b, c / d }'
done
