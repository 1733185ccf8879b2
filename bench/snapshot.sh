#!/usr/bin/env bash
# bench/snapshot.sh [N]: compaction of N documents + N change records, and a GROUP BY
# over the N-row snapshot, Sluice against DuckDB on the same Parquet files, one run.
# Needs a release build (cargo build --release -p sluice-cli) and `pip install duckdb`.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
T=${CARGO_TARGET_DIR:-target}
SLUICE="$T/release/sluice"
W=bench-work/snapshot
rm -rf bench-work/snapshot-data "$W"
mkdir -p "$W"
python3 bench/snapshot_gen.py "$N" docs > "$W/docs.ndjson"
python3 bench/snapshot_gen.py "$N" updates > "$W/updates.ndjson"
C="--config bench/snapshot.toml"
"$SLUICE" ingest $C --collection doctor "$W/docs.ndjson"
"$SLUICE" snapshot $C doctor
"$SLUICE" ingest $C --collection doctor "$W/updates.ndjson"
"$SLUICE" snapshot $C --archive-only doctor
S=bench-work/snapshot-data/snapshots
inputs=$(ls "$S"/segments/doctor/*.parquet "$S"/snapshots/doctor/0000000001/*.parquet)
echo "inputs: $(echo $inputs | wc -w) files, $(du -ch $inputs | tail -1 | cut -f1)"
# The peer first, on copies, so that Sluice's compaction (which deletes its inputs) cannot
# disturb it.
mkdir -p "$W/peer"; cp $inputs "$W/peer/"
python3 bench/snapshot_duckdb.py merge "$W/duckdb-merged.parquet" "$W"/peer/*.parquet
/usr/bin/time -f "RESULT sluice-compact wall_s=%e peak_rss_kb=%M" "$SLUICE" snapshot $C doctor
latest=$(cat "$S"/snapshots/doctor/LATEST)
python3 bench/snapshot_duckdb.py groupby "$S"/snapshots/doctor/"$latest"/*.parquet
for _ in 1 2 3; do
  "$SLUICE" query $C --timing "SELECT specialty, count(*) FROM doctor GROUP BY 1" > /dev/null
done
