#!/usr/bin/env bash
# Soak: steady load for a bounded time, printing Keel's RSS and open file descriptors over
# time; neither may grow without bound. smtp-source injects batches in a loop into Keel, which
# relays to Postfix's smtp-sink; every SAMPLE seconds one line: elapsed, messages delivered,
# RSS, fds, spool segments. Loopback only; stops everything it started.
#
# Usage: bench/soak.sh [MINUTES [SAMPLE_SECONDS]]     (defaults: 30 30)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
MINUTES=${1:-30}; SAMPLE=${2:-30}
(cd "$root" && cargo build --release -p keel --locked >&2)
T=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SMTP=$(free_port); HTTP=$(free_port); SINK=$(free_port)
SINK_USER=(); [ "$(id -u)" -eq 0 ] && SINK_USER=(-u nobody)
/usr/sbin/smtp-sink -c -4 "${SINK_USER[@]}" -h sink.soak "inet:127.0.0.1:$SINK" 512 >"$T/sink.counters" 2>/dev/null &
PIDS+=($!)
cat > "$T/keel.toml" <<CONF
[smtp]
listen = "127.0.0.1:$SMTP"
hostname = "keel.soak"
[http]
listen = "127.0.0.1:$HTTP"
[spool]
dir = "$T/spool"
[log]
dir = "$T/log"
rotate_size = "64MB"
[[route]]
domain = "*"
smarthost = "127.0.0.1:$SINK"
CONF
"$root/target/release/keel" serve --config "$T/keel.toml" 2>"$T/keel.err" &
KEEL=$!
PIDS+=($KEEL)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$HTTP/healthz" >/dev/null && break; sleep 0.1; done
(
    end=$(( $(date +%s) + MINUTES * 60 ))
    while [ "$(date +%s)" -lt "$end" ]; do
        /usr/sbin/smtp-source -4 -c -s 10 -m 2000 -l 4096 -f s@soak.test -t r@soak.test \
            "127.0.0.1:$SMTP" >/dev/null 2>&1 || true
    done
) &
PIDS+=($!)
delivered() { tr '\r' '\n' <"$T/sink.counters" | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2; }
printf '%8s %12s %10s %6s %9s\n' elapsed_s delivered rss_mb fds segments
start=$(date +%s)
end=$(( start + MINUTES * 60 ))
while [ "$(date +%s)" -lt "$end" ]; do
    sleep "$SAMPLE"
    rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$KEEL/status")
    fds=$(ls "/proc/$KEEL/fd" | wc -l)
    segs=$(ls "$T/spool" | grep -c '^segment-' || true)
    printf '%8d %12s %10s %6s %9s\n' $(( $(date +%s) - start )) "$(delivered)" "$rss" "$fds" "$segs"
done
grep -o 'VmHWM:.*' "/proc/$KEEL/status" | sed 's/^/keel peak RSS /'
