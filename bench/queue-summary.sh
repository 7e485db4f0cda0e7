#!/usr/bin/env bash
# How fast the queue summary answers with a large queue: fills Keel with N messages spread
# over D domains whose destination is down (so everything stays queued), then times
# `GET /api/v1/queues` several times and prints the figures. Target (shaping issue): under
# 100 ms for 100,000 messages in 10,000 domains.
#
# Usage: bench/queue-summary.sh [N [D]]     (defaults: 100000 10000)
# Loopback only; stops everything it started.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
N=${1:-100000}; D=${2:-10000}
(cd "$root" && cargo build --release -p keel --locked >&2)
T=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SMTP=$(free_port); HTTP=$(free_port); DEAD=$(free_port)
cat > "$T/keel.toml" <<CONF
[smtp]
listen = "127.0.0.1:$SMTP"
hostname = "keel.bench"
[http]
listen = "127.0.0.1:$HTTP"
[spool]
dir = "$T/spool"
[log]
dir = "$T/log"
[[route]]
domain = "*"
smarthost = "127.0.0.1:$DEAD"
[retry]
intervals = ["6h"]
max_age = "3d"
CONF
KEEL_LOG=${KEEL_LOG:-info,keel::queue=debug} "$root/target/release/keel" serve --config "$T/keel.toml" 2>"$T/keel.err" &
PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$HTTP/healthz" >/dev/null && break; sleep 0.1; done
echo "injecting $N messages over $D domains..."
start=$(date +%s.%N)
python3 "$root/tests/peers/inject.py" --port "$SMTP" --count "$N" --threads 16 --size 500 \
    --domains "$D" --acked "$T/acked" --deadline 1800 --tag qs
echo "injected in $(echo "$(date +%s.%N) - $start" | bc) s"
sleep 2
for limit in 50 1000 0; do
    for i in 1 2 3; do
        curl -s -o "$T/q.json" -w "GET /api/v1/queues?limit=$limit: %{time_total} s, %{size_download} bytes\n" \
            "http://127.0.0.1:$HTTP/api/v1/queues?limit=$limit"
    done
done
python3 -c "import json,sys; q=json.load(open('$T/q.json')); print('messages', q['messages'], 'scheduled queues', len(q['scheduled']), 'ready queues', len(q['ready']))"
grep -o 'VmHWM:.*' /proc/$PID/status | sed 's/^/keel peak RSS /'
grep -o 'elapsed_us=[0-9]*' "$T/keel.err" | sed 's/^/server-side summary computation: /' | tail -9
