#!/usr/bin/env bash
# One-command setup on a fresh Debian/Ubuntu machine:
#   system packages the tests and the network lab need, the two real models (fetched, assembled,
#   sha256-verified), and a release build of the `edgeray` binary.
#
#   scripts/setup.sh            # everything
#   scripts/setup.sh --no-build # packages + models only (what CI needs before scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

# System packages: iproute2 (ip, tc, bridge) for the namespace lab, python3-pip for the model
# fetcher and the OpenAI-client test, dpkg and systemd (systemd-analyze, systemd-sysusers) for
# the board package's test. Only installed when missing, and only as root.
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v tc >/dev/null || need+=(iproute2)
command -v nsenter >/dev/null || need+=(util-linux)
command -v kill >/dev/null || need+=(procps)
command -v python3 >/dev/null || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
command -v cc >/dev/null || need+=(gcc)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v systemd-analyze >/dev/null || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "warning: missing packages (${need[*]}); install them as root" >&2
  fi
fi

command -v cargo >/dev/null || { echo "error: cargo not found: install Rust with rustup" >&2; exit 1; }

# The OpenAI-compatibility test drives `edgeray serve` with the unmodified `openai` client library.
if ! python3 -c 'import openai' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check openai \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages openai \
    || echo "warning: could not install the openai package; the OpenAI-client test will fail to run" >&2
fi

# The fuzz targets (scripts/fuzz.sh, run by scripts/test.sh) are built and run by cargo-fuzz.
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi

scripts/fetch-models.sh

if [ "$build" = 1 ]; then
  cargo build --release -p edgeray
  echo "built: target/release/edgeray"
fi
