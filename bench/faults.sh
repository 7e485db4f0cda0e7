#!/usr/bin/env bash
# The fault suite's long form (CI runs the short form through `cargo test`):
#   - SIGKILL loop: 10 kills at random moments under load (25,000 messages), restart each time;
#     lost must be 0, duplicates are counted;
#   - 10,000 idle connections while a legitimate client is served; slow-client deadlines and
#     the per-client connection rate;
#   - a full spool disk (tmpfs; needs root) and the staged back-pressure stages.
# Prints each test's figures (docs/reliability.md quotes them).
#
# Usage: bench/faults.sh [CYCLES [MESSAGES [IDLE]]]     (defaults: 10 25000 10000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CYCLES=${1:-10}; MESSAGES=${2:-25000}; IDLE=${3:-10000}
# The test process holds one descriptor per idle connection as well.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export KEEL_FAULT_CYCLES=$CYCLES KEEL_FAULT_MESSAGES=$MESSAGES KEEL_IDLE_CONNECTIONS=$IDLE
cargo test -p keel --locked --test sigkill_loop --test slow_clients --test disk_full \
    -- --nocapture --test-threads=1 2>&1 |
    grep -E '^(test |cycle |SIGKILL loop|idle connections|≈|trickled|NOOP-busy|7 connections|disk full|space freed|delivered |stages:|SKIPPED|open-file)|panicked|FAILED'
