#!/usr/bin/env bash
# FFT long convolution, keel against PyTorch in one run: bench/fftconv_bench
# (keel) and bench/fftconv_torch.py (the safari formula, autograd backward)
# on the same sizes, f32, L = T, with D. The issue's target is B*C = 64*768
# rows for T = 1k .. 64k; that is 12.9 GB per operand at 64k, so by default
# this runs B*C = 64*768 at T = 1k and B*C = 768 (B = 1) at T = 1k .. 64k
# (--rows / --max-seq change the second sweep). Prints a table of times and
# the speed ratio keel/torch (torch ms / keel ms: above 1 means keel is faster).
#
#   bench/fftconv.sh [--build DIR] [--threads N] [--device cpu|cuda] [--rows N] [--max-seq T] [--iters N]
#
# Needs keel built (ninja -C DIR fftconv_bench; default DIR build) and a python
# with torch (PYTHON, default /usr/bin/python3). Both sides use N threads
# (default 2: OMP_NUM_THREADS and torch.set_num_threads).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
build="$root/build"
threads=2
device=cpu
rows=768
max_seq=65536
iters=5
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --rows) rows="$2"; shift 2 ;;
    --max-seq) max_seq="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--threads N] [--device cpu|cuda] [--rows N] [--max-seq T] [--iters N]" >&2; exit 1 ;;
  esac
done

bench="$build/bench/fftconv_bench"
[[ -x "$bench" ]] || { echo "missing $bench: cmake --build $build --target fftconv_bench" >&2; exit 1; }
python="${PYTHON:-/usr/bin/python3}"
export OMP_NUM_THREADS="$threads"

echo "# fftconv: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cpus ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $threads threads, device $device"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# torch $("$python" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo 'not importable')"

# Each sweep: "rows channels seq max_seq"
sweeps=("$((64 * 768)) 768 1024 1024" "$rows $(( rows < 768 ? rows : 768 )) 0 $max_seq")
keel_out=""
torch_out=""
for s in "${sweeps[@]}"; do
  read -r r c sq mx <<<"$s"
  args=(--rows "$r" --channels "$c" --seq "$sq" --max-seq "$mx" --device "$device" --iters "$iters")
  set +e
  k="$("$bench" "${args[@]}")"; krc=$?
  set -e
  echo "$k"
  if [[ $krc -eq 2 ]]; then echo "fftconv.sh: keel cannot run on $device; nothing measured" >&2; exit 2; fi
  [[ $krc -eq 0 ]] || exit $krc
  set +e
  t="$("$python" "$here/fftconv_torch.py" "${args[@]}" --threads "$threads")"; trc=$?
  set -e
  echo "$t"
  [[ $trc -eq 0 ]] || { echo "fftconv.sh: the torch reference failed (exit $trc)" >&2; exit $trc; }
  keel_out+="$k"$'\n'
  torch_out+="$t"$'\n'
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"

field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }

echo
echo "| B | C | T | keel fwd ms | torch fwd ms | fwd keel/torch | keel fwd+bwd ms | torch fwd+bwd ms | fwd+bwd keel/torch |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
while IFS= read -r k; do
  [[ $k == keel\ * ]] || continue
  key="T=$(field T "$k") B=$(field B "$k") C=$(field C "$k")"
  t="$(grep -F " $key " <<<"$torch_out" || true)"
  [[ -n $t ]] || { echo "fftconv.sh: torch has no line for $key" >&2; exit 1; }
  kf="$(field fwd_ms "$k")" tf="$(field fwd_ms "$t")"
  kb="$(field fwdbwd_ms "$k")" tb="$(field fwdbwd_ms "$t")"
  rf="$(awk -v a="$kf" -v b="$tf" 'BEGIN { printf "%.2f", b / a }')"
  rb="$(awk -v a="$kb" -v b="$tb" 'BEGIN { printf "%.2f", b / a }')"
  echo "| $(field B "$k") | $(field C "$k") | $(field T "$k") | $kf | $tf | **$rf** | $kb | $tb | **$rb** |"
done <<<"$keel_out"
