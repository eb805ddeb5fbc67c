#!/usr/bin/env bash
# The test command: builds the `edgeray` binary (multi-process and network-lab tests drive it)
# and runs every test of the workspace, real-model exactness tests and the 2-minute overload
# soak included, checks the library docs (`cargo doc` with warnings as errors), then runs each
# fuzz target for a bounded time (scripts/fuzz.sh; EDGERAY_FUZZ_SECS per target, default 60;
# 0 replays the seed corpus only).
#
# Needs the real models (scripts/setup.sh fetches them). The network-namespace tests need root:
# without it they print SKIP; with EDGERAY_REQUIRE_NETLAB=1 (CI sets it) a skip is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${CI:-}" = "true" ] && [ "$(id -u)" = 0 ]; then
  export EDGERAY_REQUIRE_NETLAB=1
fi

cargo build -p edgeray --bins
cargo test --workspace --no-fail-fast -- --test-threads="${EDGERAY_TEST_THREADS:-2}"
# The library docs: no rustdoc warning (every intra-doc link resolves; edgeray-runtime also
# denies undocumented public items).
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace
scripts/fuzz.sh "${EDGERAY_FUZZ_SECS:-60}"
