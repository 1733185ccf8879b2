#!/usr/bin/env bash
# bench/run_all.sh: every figure in BENCHMARKS.md, in one run, peers included.
# Needs the peer kit (../shared/bench, set up with its setup.sh) and a release build:
#   cargo build --release -p sluice-cli -p sluice-bench
# Output: bench-work/run_all.log (also on stdout).
set -euo pipefail
B=${BENCH_DIR:-../shared/bench}
mkdir -p bench-work
exec > >(tee bench-work/run_all.log) 2>&1
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores; $(uname -r)"

echo "## peers, 200k events / 20k keys"
"$B/servers.sh" start
"$B/run_peers.sh" --only duckdb,bytewax,pg,redis --runs 3

echo "## floor (3 runs)"
cargo build --release --manifest-path "$B/floor/Cargo.toml" --target-dir target/floor -q
for _ in 1 2 3; do (cd bench-work && ../target/floor/release/floor events-200000-20000.jsonl); done

echo "## sluice ingest, 200k / 20k (3 runs)"
./bench/ingest.sh 200000 20000 3
echo "## sluice ingest, 2M / 200k (2 runs)"
./bench/ingest.sh 2000000 200000 2
"$B/servers.sh" stop

echo "## HTTP"
rm -rf bench-work/sluice-http-data
target/release/sluice serve --config bench/http.toml > bench-work/http-server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:7077/healthz > /dev/null && break; sleep 0.1; done
target/release/sluice-load --addr 127.0.0.1:7077 --mode batch --batch-events 1000 --connections 4 --duration-s 10
target/release/sluice-load --addr 127.0.0.1:7077 --mode batch --batch-events 1000 --connections 8 --duration-s 10
target/release/sluice-load --addr 127.0.0.1:7077 --mode single --rate 2000 --connections 16 --duration-s 10
target/release/sluice-load --addr 127.0.0.1:7077 --mode freshness --rate 5000 --connections 32 --duration-s 10
curl -s http://127.0.0.1:7077/metrics | grep -E "^sluice_(commit|sync)_seconds_(sum|count)|^sluice_batch_events_(sum|count)"

echo "## NATS JetStream inbound vs a bare async-nats loop (5 runs)"
for _ in 1 2 3 4 5; do target/release/sluice-nats-bench --messages 200000; done

echo "## snapshots: compaction of 1M documents + 1M changes, GROUP BY, against DuckDB"
./bench/snapshot.sh 1000000
