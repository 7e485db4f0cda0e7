#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs the real peers the tests talk to
# (Postfix's smtp-source/smtp-sink, aiosmtpd, dnslib, dkimpy), checks formatting and lints,
# then runs every unit and integration test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
