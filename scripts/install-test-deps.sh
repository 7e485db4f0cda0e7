#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine (run as root, idempotent):
#   - Postfix's smtp-source / smtp-sink (the real SMTP peers), swaks, via shared/bench/setup.sh
#     when present, else directly with the same debconf answers (no system Postfix starts);
#   - dnsmasq-base (a real DNS server for the MX-lookup tests; the -base package starts no service);
#   - Python's aiosmtpd (a scriptable receiving MTA) and dkimpy (an independent DKIM verifier;
#     PyNaCl gives it ed25519-sha256, RFC 8463);
#   - Debian's chromium and playwright-core from npm (tests/browser/, the dashboard test; no
#     browser download: the test launches /usr/bin/chromium).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

pkgs=(postfix swaks procps iproute2 time dnsmasq-base chromium)
command -v node >/dev/null || pkgs+=(nodejs)
command -v npm >/dev/null || pkgs+=(npm)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-test-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    echo "postfix postfix/mailname string localhost" | $SUDO debconf-set-selections
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for t in /usr/sbin/smtp-source /usr/sbin/smtp-sink /usr/sbin/dnsmasq; do
    [ -x "$t" ] || { echo "install-test-deps: missing $t" >&2; exit 1; }
done

py=${PYTHON:-python3}
if ! "$py" -c 'import aiosmtpd, dkim, dnslib, nacl.signing' 2>/dev/null; then
    echo "install-test-deps: pip installing aiosmtpd dkimpy dnslib pynacl"
    "$py" -m pip install -q --disable-pip-version-check aiosmtpd==1.4.6 dkimpy==1.1.8 dnspython dnslib==0.9.26 PyNaCl==1.6.2
fi
"$py" -c 'import aiosmtpd, dkim, dnslib, nacl.signing' || { echo "install-test-deps: python modules missing" >&2; exit 1; }

if [ ! -d "$root/tests/browser/node_modules/playwright-core" ]; then
    echo "install-test-deps: npm installing playwright-core into tests/browser"
    (cd "$root/tests/browser" && npm install --no-save --no-audit --no-fund --loglevel=error playwright-core@1)
fi
[ -x /usr/bin/chromium ] || { echo "install-test-deps: missing /usr/bin/chromium" >&2; exit 1; }

command -v cargo >/dev/null || { echo "install-test-deps: cargo not found (install Rust 1.95 with rustup)" >&2; exit 1; }
echo "install-test-deps: ok"
