#!/usr/bin/env bash
# netlab.sh - run or clean up edgeray's network-namespace lab tests (needs root).
#
#   scripts/netlab.sh test      build `edgeray`, then run the netlab harness self-tests and the
#                               multi-host cluster tests (a SKIP is a failure here)
#   scripts/netlab.sh cleanup   remove labs left by crashed test runs (creator process gone)
#   scripts/netlab.sh cleanup-all  remove every edgeray lab namespace, also of running tests
#
# The lab itself is `tests/src/netlab.rs`; the `netlab` binary (tests/src/bin/netlab.rs) holds
# the probes and the cleanup commands. Honours CARGO_TARGET_DIR. Tools: iproute2, procps.
set -euo pipefail
cd "$(dirname "$0")/.."
case ${1:-} in
  test)
    cargo build -p edgeray
    EDGERAY_REQUIRE_NETLAB=1 cargo test -p edgeray-tests --test netlab_harness --test netlab_cluster \
      -- --test-threads=1 --nocapture
    ;;
  cleanup)     cargo run -q -p edgeray-tests --bin netlab -- cleanup-stale ;;
  cleanup-all) cargo run -q -p edgeray-tests --bin netlab -- cleanup-all ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
