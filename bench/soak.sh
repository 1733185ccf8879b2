#!/usr/bin/env bash
# bench/soak.sh: 30 minutes (DURATION_S) of mixed load at about half of peak: ingest at
# RATE events/s (half of what `sluice-load --mode batch` reaches on this machine), 500
# document reads/s, one change stream, a SQL GROUP BY every 5 s, through a writer token;
# the server's RSS is sampled every 10 s. Outside CI; results in BENCHMARKS.md.
# Needs: cargo build --release -p sluice-cli -p sluice-bench
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
DURATION_S=${DURATION_S:-1800}
RATE=${RATE:-60000}
mkdir -p bench-work
exec > >(tee bench-work/soak.log) 2>&1
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores; ${DURATION_S}s at ${RATE} events/s"
rm -rf bench-work/sluice-soak-data
token=$("$BIN/sluice" token create --offline --config bench/soak.toml --name soak --role writer 2>/dev/null)
"$BIN/sluice" serve --config bench/soak.toml > bench-work/soak-server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:7078/healthz > /dev/null && break; sleep 0.1; done
"$BIN/sluice-load" --addr 127.0.0.1:7078 --mode soak --token "$token" --pid "$server" \
    --data-dir bench-work/sluice-soak-data \
    --rate "$RATE" --batch-events 1000 --connections 4 --read-rate 500 --sql-every-s 5 \
    --duration-s "$DURATION_S"
du -sh bench-work/sluice-soak-data
