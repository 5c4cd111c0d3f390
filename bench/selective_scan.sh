#!/usr/bin/env bash
# Selective scan (Mamba-1) on the CPU, keel against PyTorch in one run:
# bench/selective_scan_bench (keel's fused chunked scan, and a streaming pass
# that reads the inputs and writes y once: the read-once bound) and
# bench/selective_scan_torch.py (a vectorised chunked PyTorch scan, autograd
# for the backward) at the same sizes and thread count. Prints a table of
# milliseconds, torch/keel, and keel's forward over the read-once pass.
#
#   bench/selective_scan.sh [--build DIR] [--threads N] [--batch B] [--dim D] [--nstate N]
#                           [--seq T1,T2,..] [--torch-seq T1,..] [--repeat R]
#
# --torch-seq: the lengths PyTorch runs (default: all of --seq); its scan does
# O(T L N D) work for chunks of L, so long T take minutes on 2 cores, and its
# backward keeps O(B D N T L) bytes: it skips fwd+bwd above 10 GiB (see the
# script).
# Needs the bench built (cmake --build DIR --target selective_scan_bench) and
# /usr/bin/python3 with torch (PYTHON to override).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
build="$root/build"
threads=2
batch=1
dim=1536
nstate=16
seq=1024,4096,16384
torch_seq=""
repeat=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --dim) dim="$2"; shift 2 ;;
    --nstate) nstate="$2"; shift 2 ;;
    --seq) seq="$2"; shift 2 ;;
    --torch-seq) torch_seq="$2"; shift 2 ;;
    --repeat) repeat="$2"; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--threads N] [--batch B] [--dim D] [--nstate N] [--seq T1,..] [--torch-seq T1,..] [--repeat R]" >&2
       exit 2 ;;
  esac
done
[[ -n $torch_seq ]] || torch_seq="$seq"

bench="$build/bench/selective_scan_bench"
[[ -x "$bench" ]] || { echo "missing $bench: cmake --build $build --target selective_scan_bench" >&2; exit 1; }
python="${PYTHON:-/usr/bin/python3}"

echo "# selective scan: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cpus ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $threads threads, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# sizes: B=$batch D=$dim N=$nstate T=$seq (torch: T=$torch_seq)"
sizes=(--batch "$batch" --dim "$dim" --nstate "$nstate" --repeat "$repeat")
keel_out="$(OMP_NUM_THREADS="$threads" "$bench" "${sizes[@]}" --seq "$seq")"
echo "$keel_out"
torch_out="$(OMP_NUM_THREADS="$threads" "$python" "$here/selective_scan_torch.py" "${sizes[@]}" --seq "$torch_seq" --threads "$threads")"
echo "$torch_out"

field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }

echo
echo "| B | D | N | T | keel fwd ms | torch fwd ms | torch/keel fwd | keel fwd+bwd ms | torch fwd+bwd ms | torch/keel fwd+bwd | read-once ms | keel fwd / read-once |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
while IFS= read -r k; do
  [[ $k == keel\ * ]] || continue
  T="$(field T "$k")"
  kf="$(field fwd_ms "$k")" kb="$(field fwdbwd_ms "$k")" st="$(field stream_ms "$k")"
  t="$(grep -E "^torch .* T=$T " <<<"$torch_out" || true)"
  if [[ -n $t ]]; then
    tf="$(field fwd_ms "$t")" tb="$(field fwdbwd_ms "$t")"
    rf="**$(ratio "$tf" "$kf")**" rb="-"
    [[ $tb =~ ^[0-9.]+$ ]] && rb="**$(ratio "$tb" "$kb")**"
  else
    tf="not run" tb="not run" rf="-" rb="-"
  fi
  echo "| $batch | $dim | $nstate | $T | $kf | $tf | $rf | $kb | $tb | $rb | $st | $(ratio "$kf" "$st") |"
done <<<"$keel_out"
