#!/usr/bin/env bash
# GPT training step, keel against PyTorch on the same work in one run:
# same sizes, batch, step (forward, backward, clip to 1.0, AdamW, zero_grad)
# and thread count. Prints a table of tokens/s and the ratio keel/torch.
#
#   bench/gpt_step.sh [--threads N] [--build DIR] [--quick] [--repeat R]
#                     [--torch-blas openmp|system]
#                     [--device cpu|cuda] [--precision fp32|bf16|fp16]
#
# --device cuda runs both on GPU 0 (a CUDA build of keel, and PYTHON= a
# PyTorch with CUDA) at GPU sizes: the tiny recipe's model at a GPU batch,
# and GPT-2 124M at T=1024, B=8. --precision sets both sides' compute
# precision (keel: train.precision's autocast; torch: torch.autocast).
#
# --repeat R runs each size R times, keel and torch alternating, and keeps
# each one's fastest run: on a shared machine, the least disturbed. Columns:
# tokens/s from the mean step time, keel/torch, the same ratio for the
# single fastest step of each, and the mean forward/backward/optimizer ms.
#
# Needs the bench built (ninja -C build-bench gpt_step_bench) and
# /usr/bin/python3 with torch. Both run on the same BLAS: OpenBLAS's OpenMP
# build, which keel links (CMakeLists.txt), found in BLAS_DIR (default
# Debian's openblas-openmp folder) and put first on LD_LIBRARY_PATH, since
# Debian's alternatives may point libopenblas.so.0 / libblas.so.3 at the
# pthread build. There two thread pools (OpenMP and OpenBLAS's pthreads)
# share the cores and both frameworks run about 2x slower on 2 cores;
# --torch-blas system runs torch on whatever the system resolves instead.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
threads="$(nproc)"
build="$root/build-bench"
quick=0
repeat=1
device=cpu
precision=fp32
torch_blas_mode=openmp
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --repeat) repeat="$2"; shift 2 ;;
    --torch-blas) torch_blas_mode="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --precision) precision="$2"; shift 2 ;;
    *) echo "usage: $0 [--threads N] [--build DIR] [--quick] [--repeat R] [--torch-blas openmp|system] [--device cpu|cuda] [--precision fp32|bf16|fp16]" >&2
       exit 2 ;;
  esac
done

[[ $torch_blas_mode == openmp || $torch_blas_mode == system ]] ||
  { echo "--torch-blas must be openmp or system, got '$torch_blas_mode'" >&2; exit 2; }
[[ $repeat =~ ^[1-9][0-9]*$ ]] || { echo "--repeat must be a positive integer, got '$repeat'" >&2; exit 2; }
[[ $device == cpu || $device == cuda ]] || { echo "--device must be cpu or cuda, got '$device'" >&2; exit 2; }
[[ $precision =~ ^(fp32|bf16|fp16)$ ]] || { echo "--precision must be fp32, bf16 or fp16, got '$precision'" >&2; exit 2; }

bench="$build/bench/gpt_step_bench"
[[ -x "$bench" ]] || { echo "missing $bench: ninja -C $build gpt_step_bench" >&2; exit 1; }
python="${PYTHON:-/usr/bin/python3}"
"$python" -c "import torch" 2>/dev/null || { echo "$python cannot import torch" >&2; exit 1; }

blas_dir="${BLAS_DIR:-/usr/lib/x86_64-linux-gnu/openblas-openmp}"
blas_env=()
if [[ -e "$blas_dir/libopenblas.so.0" ]]; then
  blas_env=(env "LD_LIBRARY_PATH=$blas_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
else
  echo "# warning: no $blas_dir/libopenblas.so.0; using the system's BLAS" >&2
fi
keel_env=("${blas_env[@]}")
torch_env=()
[[ $torch_blas_mode == openmp ]] && torch_env=("${blas_env[@]}")
# (A bundle's bench/ holds wrapper scripts, which ldd cannot read.)
keel_blas="$("${keel_env[@]}" ldd "$bench" 2>/dev/null | awk '/libopenblas/ {print $3}' | xargs -r readlink -f || true)"
torch_lib="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))')"
torch_blas="$("${torch_env[@]}" ldd "$torch_lib" 2>/dev/null | awk '/libblas|libopenblas|mkl/ {print $3}' | xargs -r readlink -f | sort -u | tr '\n' ' ' || true)"

echo "# gpt_step: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cpus" \
     "($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), threads=$threads"
echo "# keel BLAS: $keel_blas"
echo "# torch $("$python" -c 'import torch; print(torch.__version__)') BLAS: $torch_blas"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# name | model flags | warmup | steps
sizes=(
  "a: 4L x 256 x 4H, T=256 B=8, V=50257|--layers 4 --width 256 --heads 4 --seq 256 --batch 8 --vocab 50257|1|5"
  "b: 12L x 768 x 12H, T=1024 B=1, V=50257 (124M)|--layers 12 --width 768 --heads 12 --seq 1024 --batch 1 --vocab 50257|1|2"
  "c: 4L x 256 x 4H, T=256 B=8, V=256 (bytes)|--layers 4 --width 256 --heads 4 --seq 256 --batch 8 --vocab 256|2|10"
)
if [[ $quick == 1 ]]; then sizes=("${sizes[0]}" "${sizes[2]}"); fi
if [[ $device == cuda ]]; then
  command -v nvidia-smi >/dev/null && echo "# GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
  sizes=(
    "tiny: 2L x 32 x 2H, T=32 B=512, V=256 (tiny.pbtxt model)|--layers 2 --width 32 --heads 2 --seq 32 --batch 512 --vocab 256|5|50"
    "124M: 12L x 768 x 12H, T=1024 B=8, V=50257|--layers 12 --width 768 --heads 12 --seq 1024 --batch 8 --vocab 50257|3|20"
  )
fi
dev_flags="--device $device --precision $precision"

field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }

# Of several result lines, the one with the most tokens/s.
best_of() {
  local best="" line
  for line in "$@"; do
    if [[ -z "$best" ]] || awk -v a="$(field tokens_per_s "$line")" -v b="$(field tokens_per_s "$best")" \
        'BEGIN { exit !(a > b) }'; then
      best="$line"
    fi
  done
  echo "$best"
}

rows=()
for s in "${sizes[@]}"; do
  IFS='|' read -r name flags warmup steps <<<"$s"
  ks=() ts=()
  for ((r = 0; r < repeat; ++r)); do
    # shellcheck disable=SC2086
    k="$("${keel_env[@]}" "$bench" $flags $dev_flags --warmup "$warmup" --steps "$steps" --threads "$threads")"
    echo "$k  # load $(cut -d' ' -f1 /proc/loadavg)"
    # shellcheck disable=SC2086
    t="$("${torch_env[@]}" "$python" "$here/gpt_step_torch.py" $flags $dev_flags --warmup "$warmup" \
          --steps "$steps" --threads "$threads")"
    echo "$t  # load $(cut -d' ' -f1 /proc/loadavg)"
    ks+=("$k") ts+=("$t")
  done
  k="$(best_of "${ks[@]}")"
  t="$(best_of "${ts[@]}")"
  kt="$(field tokens_per_s "$k")"
  tt="$(field tokens_per_s "$t")"
  ratio="$(awk -v a="$kt" -v b="$tt" 'BEGIN { printf "%.2f", a / b }')"
  best_ratio="$(awk -v a="$(field min_ms "$k")" -v b="$(field min_ms "$t")" 'BEGIN { printf "%.2f", b / a }')"
  rows+=("| $name | $kt | $tt | **$ratio** | $best_ratio | $(field fwd_ms "$k") / $(field bwd_ms "$k") / $(field opt_ms "$k") | $(field fwd_ms "$t") / $(field bwd_ms "$t") / $(field opt_ms "$t") |")
done

echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| size | keel tok/s | torch tok/s | keel/torch | fastest step keel/torch | keel fwd / bwd / opt ms | torch fwd / bwd / opt ms |"
echo "|---|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
