"""DuckDB on the same files as Sluice's compaction and GROUP BY (the peer, same run).

usage: snapshot_duckdb.py merge OUT.parquet INPUT.parquet...
       snapshot_duckdb.py groupby INPUT.parquet...
Prints the time of the statement alone (the import and connection are not counted).
"""
import sys
import time

import duckdb

mode = sys.argv[1]
con = duckdb.connect()
con.execute("SET threads = 2")
if mode == "merge":
    out, inputs = sys.argv[2], sys.argv[3:]
    started = time.perf_counter()
    con.execute(
        f"""COPY (SELECT * EXCLUDE (sluice_rank) FROM (
              SELECT *, row_number() OVER (PARTITION BY key ORDER BY "offset" DESC) AS sluice_rank
              FROM read_parquet({inputs!r}))
            WHERE sluice_rank = 1 AND op = 'upsert') TO '{out}' (FORMAT parquet, COMPRESSION snappy)"""
    )
    elapsed = time.perf_counter() - started
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
    print(f"RESULT duckdb-merge seconds={elapsed:.3f} rows={rows}")
else:
    inputs = sys.argv[2:]
    started = time.perf_counter()
    rows = con.execute(
        f"SELECT specialty, count(*) FROM read_parquet({inputs!r}) GROUP BY 1"
    ).fetchall()
    elapsed = time.perf_counter() - started
    print(f"RESULT duckdb-groupby seconds={elapsed:.3f} groups={len(rows)}")
