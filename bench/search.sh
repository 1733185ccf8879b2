#!/usr/bin/env bash
# The search benchmarks of BENCHMARKS.md: high-lane freshness at 5,000 changes/s under a
# low-lane backlog, the demo query at 200 queries/s over 100,000 doctors, and indexing
# throughput against a bare tantivy bulk index of the same documents (same schema, same
# run), ROUNDS times each.
# BIN: the release target directory holding sluice-search-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}/release}"
B="$BIN/sluice-search-bench"
ROUNDS="${ROUNDS:-3}"
WORK=bench-work/search
mkdir -p bench-work
# Removing the previous run's data leaves the disk writing back: each run starts after
# `sync`.
fresh() { rm -rf "$WORK"; sync; }
date -u +%FT%TZ
for round in $(seq 1 "$ROUNDS"); do
    fresh
    "$B" freshness --rate 5000 --duration-s 20 --doctors 20000 --dir "$WORK" | tail -1
    fresh
    "$B" queries --doctors 100000 --qps 200 --duration-s 20 --dir "$WORK" | tail -1
    fresh
    "$B" throughput --doctors 100000 --dir "$WORK" | tail -1
done
fresh
