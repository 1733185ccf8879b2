#!/usr/bin/env bash
# bench/auth.sh: the cost of checking a token. The HTTP batch-ingest benchmark (NDJSON
# batches of 1,000 events, 4 connections) and the single-event benchmark (2,000 req/s,
# p99) against the same server build, without a token (loopback, no tokens: auth off)
# and with a writer token on every request, alternating, ROUNDS rounds each.
# Needs: cargo build --release -p sluice-cli -p sluice-bench
# Output: bench-work/auth.log (also on stdout).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
ROUNDS=${ROUNDS:-3}
DURATION_S=${DURATION_S:-10}
mkdir -p bench-work
exec > >(tee bench-work/auth.log) 2>&1
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores; $(uname -r); $ROUNDS rounds of ${DURATION_S}s"

# The server's CPU time so far (user + system), in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS_PER_S=$(getconf CLK_TCK)

run() { # mode
    local mode=$1 data=bench-work/sluice-http-data token=""  # the data_dir of bench/http.toml
    rm -rf "$data"
    if [ "$mode" = auth ]; then
        token=$("$BIN/sluice" token create --offline --config bench/http.toml --name bench --role writer 2>/dev/null)
    fi
    "$BIN/sluice" serve --config bench/http.toml > bench-work/auth-server.log 2>&1 &
    local server=$!
    for _ in $(seq 1 100); do curl -sf http://127.0.0.1:7077/healthz > /dev/null && break; sleep 0.1; done
    local args=(--addr 127.0.0.1:7077 --duration-s "$DURATION_S")
    [ -n "$token" ] && args+=(--token "$token")
    # Throughput and latency are noisy on this machine; the server's CPU time per event
    # (batch) and per request (single) says what checking the token costs.
    local before after out events
    echo "## $mode batch"
    before=$(cpu_ticks "$server")
    out=$("$BIN/sluice-load" "${args[@]}" --mode batch --batch-events 1000 --connections 4)
    after=$(cpu_ticks "$server")
    events=$(sed -E 's/.* events=([0-9]+).*/\1/' <<< "$out")
    echo "$out server_cpu_us_per_event=$(awk -v t=$((after - before)) -v e="$events" -v hz="$TICKS_PER_S" 'BEGIN {printf "%.2f", t / hz * 1e6 / e}')"
    echo "## $mode single"
    before=$(cpu_ticks "$server")
    out=$("$BIN/sluice-load" "${args[@]}" --mode single --rate 2000 --connections 16)
    after=$(cpu_ticks "$server")
    events=$(sed -E 's/.* requests=([0-9]+).*/\1/' <<< "$out")
    echo "$out server_cpu_us_per_request=$(awk -v t=$((after - before)) -v e="$events" -v hz="$TICKS_PER_S" 'BEGIN {printf "%.1f", t / hz * 1e6 / e}')"
    kill "$server"; wait "$server" 2>/dev/null || true
}

for round in $(seq 1 "$ROUNDS"); do
    echo "# round $round"
    run open
    run auth
done
