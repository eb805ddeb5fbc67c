#!/usr/bin/env bash
# Release archives and .deb packages for boards.
#
#   scripts/release.sh [--arch amd64|arm64|all] [--out DIR]      (default: all, dist/)
#
# For each architecture: a release build of `edgeray` (arm64: cross-built for
# aarch64-unknown-linux-gnu with Debian's gcc-aarch64-linux-gnu, linker set in
# .cargo/config.toml; `scripts/test-aarch64.sh` installs the toolchain and runs it under qemu),
# stripped, then
#   DIR/edgeray-VERSION-ARCH-linux.tar.gz   the binary, the systemd unit, the README
#   DIR/edgeray_VERSION_ARCH.deb            see scripts/package-deb.sh
# and DIR/SHA256SUMS over all of them. arm64 builds go to target-arm/ (as the aarch64 tests').
set -euo pipefail
cd "$(dirname "$0")/.."

arches=(amd64 arm64)
out=dist
while [ $# -gt 0 ]; do
    case "$1" in
        --arch)
            case "${2:-}" in
                amd64|arm64) arches=("$2") ;;
                all) arches=(amd64 arm64) ;;
                *) echo "error: --arch takes amd64, arm64 or all, not '${2:-}'" >&2; exit 2 ;;
            esac
            shift 2 ;;
        --out) out=${2:?--out needs a folder}; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
mkdir -p "$out"

for arch in "${arches[@]}"; do
    case "$arch" in
        amd64)
            cargo build --release -p edgeray --bin edgeray
            bin=target/release/edgeray strip=strip ;;
        arm64)
            target=aarch64-unknown-linux-gnu
            if ! rustup target list --installed | grep -qx "$target" \
                || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
                echo "error: arm64 needs the $target Rust target and gcc-aarch64-linux-gnu" >&2
                echo "       (rustup target add $target; apt-get install gcc-aarch64-linux-gnu" >&2
                echo "       libc6-dev-arm64-cross; scripts/test-aarch64.sh installs both)" >&2
                exit 1
            fi
            CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target-arm}" \
                cargo build --release -p edgeray --bin edgeray --target "$target"
            bin="${CARGO_TARGET_DIR:-$PWD/target-arm}/$target/release/edgeray"
            strip=aarch64-linux-gnu-strip ;;
    esac
    work=$(mktemp -d)
    dir=$work/edgeray-$version-$arch-linux
    install -D -m 0755 "$bin" "$dir/edgeray"
    "$strip" "$dir/edgeray"
    install -m 0644 README.md packaging/edgeray-node.service "$dir/"
    tar -C "$work" -czf "$out/edgeray-$version-$arch-linux.tar.gz" "$(basename "$dir")"
    scripts/package-deb.sh "$dir/edgeray" "$arch" "$out" >/dev/null
    rm -rf "$work"
    echo "$out/edgeray-$version-$arch-linux.tar.gz"
    echo "$out/edgeray_${version}_$arch.deb"
done
(cd "$out" && sha256sum edgeray-* edgeray_* > SHA256SUMS)
echo "$out/SHA256SUMS"
