#!/usr/bin/env bash
# A relocatable keel for GPU machines that lack the build's host packages
# (Open MPI, parallel HDF5, Protobuf, OpenBLAS, ICU): builds keel with CUDA on
# and the test binaries, then copies them and every shared library they load
# into one folder with a `run` wrapper. Left out, to be taken from the GPU
# machine: the CUDA driver and toolkit libraries (libcuda, libcudart,
# libcublas, libcublasLt, libnccl, libnvidia-*), which must match its driver,
# and glibc (libc, libm, libdl, libpthread, librt, the loader), which its
# loader provides. Open MPI's and PMIx's plugins and help files come along,
# relocated with OPAL_PREFIX and PMIX_INSTALL_PREFIX, so mpirun works too.
#
#   scripts/bundle.sh [OUT_DIR]            # default build-bundle/keel-bundle
#   BUILD_DIR=build-bundle JOBS=8 CUDA_ARCHS="90;100" scripts/bundle.sh
#   KEEL_BUNDLE_TARGETS="cuda_tests" scripts/bundle.sh   # fewer binaries
#   KEEL_BUNDLE_CUDA_LIBS=1 scripts/bundle.sh  # also copy this toolkit's
#                                              # cuBLAS(Lt) and NCCL
#
# On the GPU machine (README.md, "Running on a GPU machine"):
#   OUT/run cuda_tests                  # any bundled binary by name
#   OUT/run keel train CONFIG
#   OUT/run mpirun -np 2 OUT/bin/parallel_tests
#   OUT/test_all                        # every test binary, then the MPI ones
#   OUT/bench/gpu_all.sh --build OUT    # every GPU benchmark (PYTHON= a torch with CUDA)
# Packed, it is small enough to travel with a working tree to a lent GPU
# machine (its limit is 64 MiB): tar -C build-bundle -cJf DIR/keel-bundle.tar.xz keel-bundle
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build-bundle}
OUT=${1:-$BUILD_DIR/keel-bundle}
JOBS=${JOBS:-$(nproc)}
CUDA_ARCHS=${CUDA_ARCHS:-90}
read -r -a TARGETS <<<"${KEEL_BUNDLE_TARGETS:-keel_cli core_tests kernels_tests autograd_tests nn_tests trainer_tests recipes_tests cuda_tests parallel_tests gpu_kernels_bench attention_bench gpt_step_bench mixer_crossover_bench}"

# libkeel.so: one copy of the kernels for all the binaries, not one each.
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKEEL_CUDA=ON -DKEEL_SHARED=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHS" >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TARGETS[@]}"

if [ -e "$OUT" ] && [ ! -x "$OUT/run" ] && [ -n "$(ls -A "$OUT")" ]; then
  echo "bundle: $OUT exists and is not a bundle; refusing to replace it" >&2
  exit 1
fi
rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/lib"
OUT=$(cd "$OUT" && pwd)

for t in "${TARGETS[@]}"; do
  if [ "$t" = keel_cli ]; then
    cp "$BUILD_DIR/keel" "$OUT/bin/keel"
  elif [[ $t == *_bench ]]; then
    cp "$BUILD_DIR/bench/$t" "$OUT/bin/$t"
  else
    cp "$BUILD_DIR/tests/$t" "$OUT/bin/$t"
  fi
done

# Libraries the target machine supplies: the CUDA stack and glibc.
SKIP='^(libcuda|libcudart|libcublas|libcublasLt|libnccl|libnvidia-[a-z0-9_-]+|libc|libm|libmvec|libdl|libpthread|librt|libutil|libresolv|libanl|libnsl|libBrokenLocale|ld-linux-x86-64|ld-linux-aarch64)\.so'
CUDA_KEEP='^(libcublas|libcublasLt|libnccl)\.so'

# Copies every library `file` loads (transitively: ldd resolves the closure)
# into $OUT/lib, except those the target supplies. A library this machine
# lacks is fatal for keel's binaries; for an optional MPI plugin (`optional`)
# it only means that plugin will not load there either.
copy_deps() {
  local file=$1 optional=${2:-} line name path
  while IFS= read -r line; do
    case "$line" in
      *"=> not found"*)
        name=$(awk '{print $1}' <<<"$line")
        if [[ ! $name =~ $SKIP ]]; then
          if [ -n "$optional" ]; then
            echo "bundle: note: plugin $(basename "$file") needs $name, not on this machine" >&2
            continue
          fi
          echo "bundle: $file needs $name, which this machine cannot resolve" >&2
          exit 1
        fi
        ;;
      *"=> /"*)
        name=$(awk '{print $1}' <<<"$line")
        path=$(awk '{print $3}' <<<"$line")
        if [[ $name =~ $SKIP ]]; then
          [[ ${KEEL_BUNDLE_CUDA_LIBS:-0} = 1 && $name =~ $CUDA_KEEP ]] || continue
        fi
        [ -e "$OUT/lib/$name" ] || cp -L "$path" "$OUT/lib/$name"
        ;;
    esac
  done < <(ldd "$file")
}

for f in "$OUT"/bin/*; do copy_deps "$f"; done
# Symbol tables are not needed to run; without them the bundle is smaller.
if command -v strip >/dev/null; then
  strip --strip-unneeded "$OUT"/bin/* "$OUT"/lib/*.so* 2>/dev/null || true
fi

# Open MPI finds its plugins, help files and orted under its install prefix;
# OPAL_PREFIX moves that prefix into the bundle. Paths below the prefix keep
# their layout (Debian's is lib/x86_64-linux-gnu/openmpi/lib/openmpi3).
if compgen -G "$OUT/lib/libmpi.so*" >/dev/null && command -v ompi_info >/dev/null; then
  ompi_path() { ompi_info --path "$1" --parsable | awk -F: '{print $3}'; }
  prefix=$(ompi_path prefix)
  for key in pkglibdir pkgdatadir; do
    dir=$(ompi_path "$key")
    mkdir -p "$OUT/openmpi/${dir#"$prefix"/}"
    cp -rL "$dir/." "$OUT/openmpi/${dir#"$prefix"/}/"
  done
  bindir=$(ompi_path bindir)
  mkdir -p "$OUT/openmpi/${bindir#"$prefix"/}"
  for exe in mpirun mpiexec orterun orted prterun prted; do
    if [ -e "$bindir/$exe" ]; then
      cp -L "$bindir/$exe" "$OUT/openmpi/${bindir#"$prefix"/}/$exe"
      copy_deps "$bindir/$exe"
    fi
  done
  while IFS= read -r -d '' so; do copy_deps "$so" optional; done \
    < <(find "$OUT/openmpi" -name '*.so' -print0)
  # PMIx (external to Open MPI 4 on Debian, loaded by its pmix plugin) has a
  # prefix of its own.
  pmix_lib=$(find "$OUT/openmpi" "$OUT/lib" -name '*.so*' -exec ldd {} + 2>/dev/null |
    awk '/libpmix\.so/ && $3 ~ /^\// && !found {print $3; found = 1}')
  if [ -n "$pmix_lib" ]; then
    pmix_prefix=$(dirname "$(dirname "$(readlink -f "$pmix_lib")")")
    if [ -d "$pmix_prefix/lib/pmix" ]; then
      mkdir -p "$OUT/pmix/lib"
      cp -rL "$pmix_prefix/lib/pmix" "$OUT/pmix/lib/"
      [ -d "$pmix_prefix/share" ] && cp -rL "$pmix_prefix/share" "$OUT/pmix/"
      while IFS= read -r -d '' so; do copy_deps "$so" optional; done \
        < <(find "$OUT/pmix" -name '*.so' -print0)
    fi
  fi
fi

cat >"$OUT/run" <<'EOF'
#!/usr/bin/env bash
# Runs a command with the bundle's libraries: `run NAME args` runs bin/NAME
# (or openmpi's mpirun), anything else runs as given. cuBLAS(Lt) 13 and
# NCCL 2 come from KEEL_CUDA_LIB_DIRS (colon-separated), else from
# nvidia-* pip packages (e.g. PyTorch's) or a CUDA 13 toolkit on this machine.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dirs=${KEEL_CUDA_LIB_DIRS:-}
have() { [ -n "$dirs" ] && for d in ${dirs//:/ }; do [ -e "$d/$1" ] && return 0; done; return 1; }
candidates=()
if command -v python3 >/dev/null; then
  while IFS= read -r sp; do
    for d in "$sp"/nvidia/*/lib "$sp"/nvidia/cu13/lib; do [ -d "$d" ] && candidates+=("$d"); done
  done < <(python3 -c 'import site, sys
for p in site.getsitepackages() + [site.getusersitepackages()]: print(p)' 2>/dev/null || true)
fi
for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu; do
  [ -d "$d" ] && candidates+=("$d")
done
for lib in libcublas.so.13 libcublasLt.so.13 libnccl.so.2; do
  [ -e "$HERE/lib/$lib" ] && continue
  have "$lib" && continue
  for d in "${candidates[@]}"; do
    if [ -e "$d/$lib" ]; then dirs=${dirs:+$dirs:}$d; break; fi
  done
done
export LD_LIBRARY_PATH="$HERE/lib${dirs:+:$dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -d "$HERE/openmpi" ]; then
  export OPAL_PREFIX="$HERE/openmpi"
  export PATH="$HERE/openmpi/bin:$PATH"
fi
[ -d "$HERE/pmix" ] && export PMIX_INSTALL_PREFIX="$HERE/pmix"
if [ $# -eq 0 ]; then
  echo "usage: $0 NAME|COMMAND [ARGS...]   (bundled: $(ls "$HERE/bin" | tr '\n' ' '))" >&2
  exit 2
fi
if [ -x "$HERE/bin/$1" ]; then
  exe="$HERE/bin/$1"
  shift
  exec "$exe" "$@"
fi
exec "$@"
EOF
chmod +x "$OUT/run"

cat >"$OUT/test_all" <<'EOF'
#!/usr/bin/env bash
# Every bundled GoogleTest binary, then the MPI tests under mpirun.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
status=0
for t in "$HERE"/bin/*_tests; do
  name=$(basename "$t")
  [ "$name" = parallel_tests ] && continue
  echo "== $name"
  "$HERE/run" "$name" --gtest_brief=1 || status=1
done
if [ -x "$HERE/bin/parallel_tests" ]; then
  for np in 2 4; do
    echo "== parallel_tests (mpirun -np $np)"
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 \
      "$HERE/run" mpirun -np "$np" --oversubscribe "$HERE/bin/parallel_tests" || status=1
  done
fi
exit $status
EOF
chmod +x "$OUT/test_all"

# The benchmark scripts with their PyTorch halves, and for each bundled
# benchmark binary a wrapper at OUT/bench/NAME that runs it through `run`:
# the scripts find it there with --build OUT.
if compgen -G "$OUT/bin/*_bench" >/dev/null; then
  mkdir -p "$OUT/bench"
  cp bench/*.sh bench/*.py "$OUT/bench/"
  for b in "$OUT"/bin/*_bench; do
    name=$(basename "$b")
    printf '#!/usr/bin/env bash\nexec "$(dirname "${BASH_SOURCE[0]}")/../run" %s "$@"\n' "$name" \
      >"$OUT/bench/$name"
    chmod +x "$OUT/bench/$name"
  done
fi

echo "bundle: $OUT ($(du -sh "$OUT" | cut -f1)): $(ls "$OUT/bin" | tr '\n' ' ')"
