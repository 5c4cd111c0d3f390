#!/usr/bin/env bash
# keel's memory-bound CUDA kernels against PyTorch eager, in one run on the
# same GPU: copy bandwidth (the roofline), LayerNorm forward and backward,
# softmax-cross-entropy forward + backward, and AdamW plus the global
# gradient norm over GPT-2 124M's parameter set. Prints one table: keel
# GB/s, keel as % of the device's cudaMemcpy device-to-device bandwidth,
# torch GB/s and keel/torch (above 1: keel faster). What each row's bytes
# count is in bench/gpu_kernels_bench.cpp and bench/README.md.
#
#   bench/gpu_kernels.sh [--build DIR] [--iters N] [--warmup N] [--quick]
#
# Needs gpu_kernels_bench built with CUDA (cmake -DKEEL_CUDA=ON, then
# ninja -C DIR gpu_kernels_bench) and, for the torch columns, a PyTorch with
# CUDA at $PYTHON (default: the python3 on PATH). The sizes below are the
# one source of truth: both programs get them on the command line.
# Exit status 2 when keel finds no GPU (or was built without CUDA).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
build="$root/build-cuda"
iters=50
warmup=10
quick=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    *) echo "usage: $0 [--build DIR] [--iters N] [--warmup N] [--quick]" >&2; exit 2 ;;
  esac
done
[[ $iters =~ ^[1-9][0-9]*$ ]] || { echo "--iters must be a positive integer, got '$iters'" >&2; exit 2; }
[[ $warmup =~ ^[0-9]+$ ]] || { echo "--warmup must be a non-negative integer, got '$warmup'" >&2; exit 2; }

# ---- sizes (both programs) ---------------------------------------------------
copy_mb=1024                 # f32 device-to-device copy; bytes = read + written
ln_shapes=16384x768,8192x4096  # LayerNorm (rows = B*T, C): GPT-2 small, and a wide model
ce_shapes=8192x50304         # cross-entropy (rows = B*T, V = GPT-2's padded vocab)
dtypes=bf16,f32              # activation dtypes for LayerNorm and cross-entropy
gpt=12,768,1024,50304        # AdamW / grad norm: GPT-2 124M (layers, width, context, vocab)
flush_mb=512                 # L2 flush before every timed call (an H100's L2 is 50 MB)
if [[ $quick == 1 ]]; then
  copy_mb=256 ln_shapes=16384x768 dtypes=bf16 iters=$(( iters < 20 ? iters : 20 ))
fi
size_args=(--copy-mb "$copy_mb" --ln "$ln_shapes" --ce "$ce_shapes" --dtypes "$dtypes"
           --gpt "$gpt" --flush-mb "$flush_mb" --iters "$iters" --warmup "$warmup")

bench="$build/bench/gpu_kernels_bench"
[[ -x "$bench" ]] || {
  echo "missing $bench: cmake -S . -B $build -G Ninja -DKEEL_CUDA=ON && ninja -C $build gpu_kernels_bench" >&2
  exit 1
}
python="${PYTHON:-python3}"

echo "# gpu_kernels: $(date -u '+%Y-%m-%d %H:%M UTC'), $(hostname)"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv,noheader |
    sed 's/^/# nvidia-smi: /' || true
fi

# keel first, then torch: one process at a time on the GPU.
set +e
keel_out="$("$bench" "${size_args[@]}")"
keel_rc=$?
set -e
if [[ $keel_rc == 2 ]]; then
  echo "gpu_kernels: keel found no GPU, or was built without CUDA (message above); nothing measured" >&2
  exit 2
elif [[ $keel_rc != 0 ]]; then
  echo "$keel_out"
  echo "gpu_kernels: $bench failed with status $keel_rc" >&2
  exit 1
fi
echo "$keel_out" | sed 's/^/# keel  /'

torch_out=""
set +e
torch_out="$("$python" "$here/gpu_kernels_torch.py" "${size_args[@]}")"
torch_rc=$?
set -e
if [[ $torch_rc == 0 ]]; then
  echo "$torch_out" | sed 's/^/# torch /'
else
  echo "gpu_kernels: the PyTorch reference did not run ($python, status $torch_rc: see above);" \
       "the torch columns are empty" >&2
  torch_out=""
fi

# Rows in keel's order; a keel line with several torch variants (AdamW fused
# and foreach) gives one row per variant. memcpy_d2d is the roofline.
echo
printf '%s\n%s\n' "$keel_out" "$torch_out" | awk -v keel_lines="$(grep -c '^result' <<<"$keel_out")" '
  function field(line, key,   m) {
    if (match(line, " " key "=[^ ]*")) return substr(line, RSTART + length(key) + 2, RLENGTH - length(key) - 2)
    return ""
  }
  /^result / {
    n_seen++
    k = field($0, "kernel") "|" field($0, "dtype") "|" field($0, "shape")
    if (n_seen <= keel_lines) {
      order[++nk] = k
      kg[k] = field($0, "gbps"); kms[k] = sprintf("%.1f", 1000 * field($0, "ms"))
      if (field($0, "kernel") == "memcpy_d2d") copy_bw = kg[k]
    } else {
      v = field($0, "variant")
      nt[k]++
      tv[k, nt[k]] = v; tg[k, nt[k]] = field($0, "gbps"); tms[k, nt[k]] = sprintf("%.1f", 1000 * field($0, "ms"))
    }
  }
  END {
    print "| kernel | dtype | shape | keel GB/s | % of copy BW | torch GB/s | keel/torch | keel µs | torch µs |"
    print "|---|---|---|---:|---:|---:|---:|---:|---:|"
    for (i = 1; i <= nk; i++) {
      k = order[i]; split(k, p, "|")
      pct = copy_bw > 0 ? sprintf("%.0f%%", 100 * kg[k] / copy_bw) : "-"
      if (nt[k] == 0) {
        printf "| %s | %s | %s | %s | %s | - | - | %s | - |\n", p[1], p[2], p[3], kg[k], pct, kms[k]
        continue
      }
      for (j = 1; j <= nt[k]; j++) {
        name = tv[k, j] != "" ? p[1] " (torch " tv[k, j] ")" : p[1]
        ratio = tg[k, j] > 0 ? sprintf("**%.2f**", kg[k] / tg[k, j]) : "-"
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", name, p[2], p[3], kg[k], pct,
               tg[k, j], ratio, kms[k], tms[k, j]
      }
    }
  }'
