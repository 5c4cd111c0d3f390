#!/usr/bin/env bash
# The main job: install, build, prepare the King James Bible, train the small
# byte-level GPT on the CPU for a few minutes, and sample text from it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target keel_cli
KEEL="$BUILD_DIR/keel"

mkdir -p data/bible
if [ ! -f data/bible/train_000000.bin ]; then
  bible -l10000 gen1:1-rev22:21 > data/bible/kjv.txt
  "$KEEL" prepare --tokenizer byte --out data/bible --val-fraction 0.01 data/bible/kjv.txt
fi
CONFIG=${CONFIG:-recipes/gpt/configs/small.pbtxt}
"$KEEL" train "$CONFIG" "$@"
"$KEEL" generate "${CKPT_DIR:-runs/small/ckpt}" --prompt "And God said" --tokens 300 --temperature 0.8 --top-k 40
