#!/usr/bin/env bash
# Fused attention on one GPU, keel against PyTorch's flash backend in one
# run: bench/attention_bench (keel) and bench/attention_sdpa.py
# (torch.nn.functional.scaled_dot_product_attention forced to flash) on the
# same device, bf16, B*T = 16k tokens, H*D = 2048, T in {1k..16k}, D in
# {64, 128}, causal and not. Prints a table of TFLOP/s (forward 4*B*H*T^2*D,
# backward 2.5x that, halved when causal) and the ratio keel/torch.
#
#   bench/attention.sh [--build DIR] [-- extra flags for both, e.g. --seq 4096 --dim 128]
#
# Needs keel built with CUDA (cmake -DKEEL_CUDA=ON; ninja -C DIR attention_bench;
# default DIR build-cuda, what scripts/test_gpu.sh uses) and a python with a
# CUDA build of torch (PYTHON, default python3). Exits 2 without a GPU.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
build="$root/build-cuda"
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "usage: $0 [--build DIR] [-- flags for both benches]" >&2; exit 1 ;;
  esac
done

bench="$build/bench/attention_bench"
[[ -x "$bench" ]] || { echo "missing $bench: cmake --build $build --target attention_bench" >&2; exit 1; }
python="${PYTHON:-python3}"

echo "# attention: $(date -u '+%Y-%m-%d %H:%M UTC')"
if command -v nvidia-smi >/dev/null; then
  echo "# $(nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | head -1)"
fi
echo "# torch $("$python" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null || echo 'not importable')"

set +e
keel_out="$("$bench" "${extra[@]}")"; krc=$?
set -e
echo "$keel_out"
if [[ $krc -eq 2 ]]; then echo "attention.sh: no GPU for keel; nothing measured" >&2; exit 2; fi
[[ $krc -eq 0 ]] || exit $krc
set +e
torch_out="$("$python" "$here/attention_sdpa.py" "${extra[@]}")"; trc=$?
set -e
echo "$torch_out"
[[ $trc -eq 0 ]] || { echo "attention.sh: the torch reference failed (exit $trc)" >&2; exit $trc; }

field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }

echo
echo "| T | B | H | D | causal | keel fwd TFLOP/s | torch fwd TFLOP/s | fwd keel/torch | keel fwd+bwd TFLOP/s | torch fwd+bwd TFLOP/s | fwd+bwd keel/torch |"
echo "|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|---:|"
while IFS= read -r k; do
  [[ $k == keel\ * ]] || continue
  key="T=$(field T "$k") B=$(field B "$k") H=$(field H "$k") D=$(field D "$k") causal=$(field causal "$k")"
  t="$(grep -F "torch $key " <<<"$torch_out" || true)"
  [[ -n $t ]] || { echo "attention.sh: torch has no line for $key" >&2; exit 1; }
  kf="$(field fwd_tflops "$k")" tf="$(field fwd_tflops "$t")"
  kb="$(field fwdbwd_tflops "$k")" tb="$(field fwdbwd_tflops "$t")"
  rf="$(awk -v a="$kf" -v b="$tf" 'BEGIN { printf "%.2f", a / b }')"
  rb="$(awk -v a="$kb" -v b="$tb" 'BEGIN { printf "%.2f", a / b }')"
  causal="$(field causal "$k")"
  echo "| $(field T "$k") | $(field B "$k") | $(field H "$k") | $(field D "$k") | $([[ $causal == 1 ]] && echo yes || echo no) | $kf | $tf | **$rf** | $kb | $tb | **$rb** |"
done <<<"$keel_out"
