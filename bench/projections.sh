#!/usr/bin/env bash
# The projection benchmarks of BENCHMARKS.md, in one run, each beside its peer:
# freshness and fan-out (targets), the 200k-event load with and without the projection,
# the 1M-document backfill, and entry reads over HTTP against redis-benchmark GETs of the
# local Redis (same value size, same concurrency), ROUNDS times.
# BIN: the release target directory holding sluice-projection-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}/release}"
B="$BIN/sluice-projection-bench"
ROUNDS="${ROUNDS:-3}"
WORK=bench-work
mkdir -p "$WORK"
# Removing the previous run's data leaves the disk writing back; an fsync then stalls for
# most of a second. Each measurement starts after `sync`.
fresh() { rm -rf "$1"; sync; }
date -u +%FT%TZ
# Freshness watches for the update's `seq`, which only the script copies into a profile.
fresh "$WORK/projections"
"$B" freshness --rate 5000 --duration-s 15 --doctors 10000 --projector js | tail -2
for projector in js native; do
    fresh "$WORK/projections"
    "$B" fanout --fanout 1000 --doctors 10000 --renames 20 --projector "$projector" | tail -2
done
for round in $(seq 1 "$ROUNDS"); do
    for projector in none js native; do
        fresh "$WORK/projections"
        "$B" throughput --events 200000 --doctors 100000 --projector "$projector" | tail -1
    done
done
fresh "$WORK/projections"
"$B" backfill-seed --doctors 1000000 | tail -1
for projector in js native; do
    fresh "$WORK/backfill" && cp -r "$WORK/projections" "$WORK/backfill" && sync
    "$B" backfill --dir "$WORK/backfill" --doctors 1000000 --projector "$projector" | tail -1
done
fresh "$WORK/reads"
"$B" reads-seed --keys 10000 --dir "$WORK/reads" | tail -1
"$B" reads-serve --dir "$WORK/reads" --addr 127.0.0.1:7071 > "$WORK/reads-serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do grep -q serving "$WORK/reads-serve.log" && break; sleep 0.1; done
for round in $(seq 1 "$ROUNDS"); do
    # Same value size as an entry answer (~130 bytes), same 50 connections.
    redis-benchmark -h 127.0.0.1 -p 6379 -c 50 -n 300000 -d 130 -t set,get -r 10000 --csv | grep GET
    "$B" reads --addr 127.0.0.1:7071 --connections 50 --duration-s 8 --keys 10000 | tail -2
done
