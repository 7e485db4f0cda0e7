#!/usr/bin/env bash
# End-to-end relay benchmark: Keel and Postfix measured the same way in one run, through the
# neutral harness in ../shared/bench (smtp-source, 20 sessions, N messages of SIZE_KB KiB,
# relayed to smtp-sink; fsync on in both). Alternates which MTA goes first across rounds and
# prints each run plus the Keel/Postfix ratios of the medians.
#
# Usage: bench/e2e.sh [N [SIZE_KB [ROUNDS]]]      (defaults: 20000 10 2)
# Needs: ../shared/bench/setup.sh run once (root), a release build (done here).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
shared=${SHARED_BENCH:-$root/../shared/bench}
N=${1:-20000}; SIZE_KB=${2:-10}; ROUNDS=${3:-2}
[ -x "$shared/mta-bench.sh" ] || { echo "e2e.sh: $shared/mta-bench.sh not found (set SHARED_BENCH)" >&2; exit 1; }

(cd "$root" && cargo build --release -p keel --locked >&2)
KEEL=$root/target/release/keel
results=$(mktemp)
trap 'rm -f "$results"' EXIT

run_keel() {
    LABEL=keel RESULTS=$results "$shared/mta-bench.sh" "$N" "$SIZE_KB" -- sh -c '
        cat > "$BENCH_TMP/keel.toml" <<CONF
[smtp]
listen = "$BENCH_LISTEN"
hostname = "keel.bench"
[http]
listen = "127.0.0.1:0"
[spool]
dir = "$BENCH_TMP/spool"
[log]
dir = "$BENCH_TMP/log"
[[route]]
domain = "*"
smarthost = "$BENCH_SINK"
CONF
        exec "$0" serve --config "$BENCH_TMP/keel.toml"' "$KEEL"
}
run_postfix() {
    LABEL=postfix RESULTS=$results "$shared/postfix-baseline.sh" "$N" "$SIZE_KB"
}

for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then run_keel; run_postfix; else run_postfix; run_keel; fi
done

echo
echo "== $N messages of ${SIZE_KB} KiB, 20 sessions, $(nproc) cores, $ROUNDS round(s) =="
awk '
function get(line, key,   i, n, kv) { n = split(line, kv, " "); for (i = 1; i <= n; i++) if (index(kv[i], key "=") == 1) return substr(kv[i], length(key) + 2); return "" }
function median(arr, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }; return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2 }
/^RESULT/ {
    l = get($0, "label"); c[l]++
    e2e[l, c[l]] = get($0, "e2e_rate") + 0; inj[l, c[l]] = get($0, "inject_rate") + 0
    rss[l, c[l]] = get($0, "mta_peak_rss_sum_kb") + 0; cpu[l, c[l]] = get($0, "mta_cpu_s") + 0
    printf "%-8s inject %8.1f msg/s  end-to-end %8.1f msg/s  peak RSS %7.1f MB  CPU %6.2f s  complete=%s\n", l, inj[l, c[l]], e2e[l, c[l]], rss[l, c[l]] / 1024, cpu[l, c[l]], get($0, "e2e_complete")
}
END {
    for (who in c) { n = c[who]; for (i = 1; i <= n; i++) { a[i] = e2e[who, i]; b[i] = inj[who, i]; m[i] = rss[who, i] }
        E[who] = median(a, n); I[who] = median(b, n); R[who] = median(m, n) }
    if (("keel" in c) && ("postfix" in c) && E["postfix"] > 0 && I["postfix"] > 0) {
        printf "median   keel e2e %.1f msg/s, postfix e2e %.1f msg/s  =>  keel/postfix end-to-end %.2fx, inject %.2fx; keel peak RSS %.1f MB\n",
            E["keel"], E["postfix"], E["keel"] / E["postfix"], I["keel"] / I["postfix"], R["keel"] / 1024
    }
}' "$results"
