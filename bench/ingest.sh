#!/usr/bin/env bash
# bench/ingest.sh [N=200000] [K=20000] [RUNS=3]
# `sluice ingest` of the peer kit's event file into a fresh data directory (durable, field
# mode), verified with the kit's checker. Prints one RESULT line per run, in the kit's
# format, with the whole process's wall time and peak RSS. Run from the repository root
# after `cargo build --release`.
set -euo pipefail
N=${1:-200000}; K=${2:-20000}; RUNS=${3:-3}
B=${BENCH_DIR:-../shared/bench}
PY=${BENCH_PY:-$HOME/.cache/sluice-bench-venv/bin/python}
WORK=${BENCH_WORK:-$PWD/bench-work}
SLUICE=${SLUICE_BIN:-target/release/sluice}
events=$WORK/events-$N-$K.jsonl
mkdir -p "$WORK/out"
[ -f "$events" ] || "$PY" "$B/gen_events.py" "$N" "$K" "$events"
for run in $(seq 1 "$RUNS"); do
    data=$WORK/sluice-data
    rm -rf "$data"
    sync
    start=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$WORK/out/sluice.rss" \
        "$SLUICE" ingest --config bench/bench.toml --data-dir "$data" --collection events "$events" > "$WORK/out/sluice.summary"
    end=$(date +%s.%N)
    "$SLUICE" export --config bench/bench.toml --data-dir "$data" --collection events > "$WORK/out/sluice.jsonl"
    if "$PY" "$B/compare.py" "$WORK/out/sluice.jsonl" "$events.expected.jsonl" > "$WORK/out/sluice.compare"; then ok=yes; else ok=no; fi
    wall=$(echo "$end - $start" | bc -l)
    rss_mb=$(( $(cat "$WORK/out/sluice.rss") / 1024 ))
    printf 'RESULT sluice wall_s=%.3f events_per_s=%.0f verified=%s peak_rss_mb=%s  # %s\n' \
        "$wall" "$(echo "$N / $wall" | bc -l)" "$ok" "$rss_mb" "$(cat "$WORK/out/sluice.summary")"
done
