#!/usr/bin/env bash
# bench/operator.sh: what the operator's tools cost the server. The HTTP batch-ingest
# benchmark (NDJSON batches of 1,000 events, 4 connections, DURATION_S) against the same
# build, alternating per round between:
#   plain     bench/http.toml, nothing attached;
#   watched   the same with one `sluice tap` (following every change; at its default
#             nice 10) and one `sluice top` (refreshing every second) attached, their
#             output discarded;
#   watched0  the same with `sluice tap --nice 0` (the shell's priority);
#   archived  bench/http-archiver.toml: the same with snapshots on (the archiver writes
#             Parquet segments of every change; no compaction during the run).
# Needs: cargo build --release -p sluice-cli -p sluice-bench
# Output: bench-work/operator.log (also on stdout).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
ROUNDS=${ROUNDS:-3}
DURATION_S=${DURATION_S:-10}
MODES=${MODES:-plain watched watched0 archived}
mkdir -p bench-work
exec > >(tee bench-work/operator.log) 2>&1
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores; $(uname -r); $ROUNDS rounds of ${DURATION_S}s"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS_PER_S=$(getconf CLK_TCK)

run() { # mode
    local mode=$1 config=bench/http.toml data=bench-work/sluice-http-data
    [ "$mode" = archived ] && config=bench/http-archiver.toml
    rm -rf "$data"
    "$BIN/sluice" serve --config "$config" > bench-work/operator-server.log 2>&1 &
    local server=$! watchers=()
    for _ in $(seq 1 100); do curl -sf http://127.0.0.1:7077/healthz > /dev/null && break; sleep 0.1; done
    local nice=10
    [ "$mode" = watched0 ] && nice=0
    if [ "$mode" = watched ] || [ "$mode" = watched0 ]; then
        "$BIN/sluice" tap --server http://127.0.0.1:7077 --nice "$nice" > /dev/null 2>&1 &
        watchers+=($!)
        "$BIN/sluice" top --server http://127.0.0.1:7077 > /dev/null 2>&1 &
        watchers+=($!)
    fi
    local before after out events watcher_ticks=0
    before=$(cpu_ticks "$server")
    local watchers_before=0
    for pid in "${watchers[@]}"; do watchers_before=$((watchers_before + $(cpu_ticks "$pid"))); done
    out=$("$BIN/sluice-load" --addr 127.0.0.1:7077 --duration-s "$DURATION_S" --mode batch --batch-events 1000 --connections 4)
    after=$(cpu_ticks "$server")
    # How far behind `tap` ended: the time until it stops using CPU once the load stops.
    local catch_up_s=0
    if [ ${#watchers[@]} -gt 0 ]; then
        local start_ns last ticks
        start_ns=$(date +%s%N)
        last=$(cpu_ticks "${watchers[0]}")
        while sleep 0.2; do
            ticks=$(cpu_ticks "${watchers[0]}")
            [ "$ticks" = "$last" ] && break
            last=$ticks
        done
        catch_up_s=$(awk -v ns=$(( $(date +%s%N) - start_ns )) 'BEGIN {printf "%.1f", ns / 1e9 - 0.2}')
    fi
    for pid in "${watchers[@]}"; do watcher_ticks=$((watcher_ticks + $(cpu_ticks "$pid"))); done
    watcher_ticks=$((watcher_ticks - watchers_before))
    events=$(sed -E 's/.* events=([0-9]+).*/\1/' <<< "$out")
    echo "## $mode $out server_cpu_us_per_event=$(awk -v t=$((after - before)) -v e="$events" -v hz="$TICKS_PER_S" 'BEGIN {printf "%.2f", t / hz * 1e6 / e}') watchers_cpu_s=$(awk -v t="$watcher_ticks" -v hz="$TICKS_PER_S" 'BEGIN {printf "%.2f", t / hz}') tap_catch_up_s=$catch_up_s"
    for pid in "${watchers[@]}"; do kill "$pid" 2>/dev/null || true; done
    kill "$server"; wait "$server" 2>/dev/null || true
}

for round in $(seq 1 "$ROUNDS"); do
    echo "# round $round"
    for mode in $MODES; do run "$mode"; done
done
