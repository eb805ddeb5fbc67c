#!/usr/bin/env bash
# aarch64 (Raspberry Pi) proof from an x86-64 machine: cross-builds the `edgeray` binary (the whole
# dependency tree a board needs: model, runtime, actors) for aarch64-unknown-linux-gnu and starts
# it under qemu-user, then runs edgeray-model's quantized-kernel tests under qemu-user, twice:
#   - qemu's default CPU ("max": NEON + dotprod): scalar, neon and neon-dotprod backends;
#   - a Cortex-A72 (Raspberry Pi 4: NEON, no dotprod): scalar and neon backends.
# The proptest `quant::tests::simd_backends_equal_scalar` checks every available backend
# bit-for-bit against the scalar reference. Then one real-model test (gemma3 scores a real text
# within llama.cpp's own noise) runs under qemu on the NEON + dotprod kernels; it needs
# the models from scripts/setup.sh.
#
# Installs what is missing (rustup target; as root, Debian's gcc-aarch64-linux-gnu,
# libc6-dev-arm64-cross and qemu-user). Linker and qemu runner: .cargo/config.toml.
# Builds go to target-arm/ (override with CARGO_TARGET_DIR) so they do not share the native lock.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target-arm}"

if ! rustup target list --installed | grep -qx "$TARGET"; then
  rustup target add "$TARGET"
fi

missing=()
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
[ -e /usr/aarch64-linux-gnu/lib/libc.so.6 ] || missing+=(libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  else
    echo "missing packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
fi

cargo build -p edgeray --bin edgeray --target "$TARGET"

echo "== the edgeray binary under qemu-aarch64"
file "$CARGO_TARGET_DIR/$TARGET/debug/edgeray" 2>/dev/null || true
qemu-aarch64 -L /usr/aarch64-linux-gnu "$CARGO_TARGET_DIR/$TARGET/debug/edgeray" --version

echo "== quant tests under qemu-aarch64 (default CPU: NEON + dotprod)"
cargo test -p edgeray-model --target "$TARGET" --lib -- quant

echo "== quant tests under qemu-aarch64 -cpu cortex-a72 (Raspberry Pi 4: NEON, no dotprod)"
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a72" \
  cargo test -p edgeray-model --target "$TARGET" --lib -- quant

echo "== real-model exactness under qemu-aarch64 (gemma3, NEON + dotprod kernels)"
cargo test -p edgeray-model --target "$TARGET" --test exactness_real -- --exact gemma3_bread_agrees_with_llama_cpp
