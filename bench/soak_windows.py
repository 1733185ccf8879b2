#!/usr/bin/env python3
"""Five-minute windows of a soak log (bench/soak.sh's output): the mean and range of the
server's RSS and of each memory owner it reported, as a Markdown table for BENCHMARKS.md.
Usage: bench/soak_windows.py bench-work/soak.log [window_s]"""
import re
import sys

path = sys.argv[1]
window_s = int(sys.argv[2]) if len(sys.argv) > 2 else 300
columns = {}
for line in open(path):
    if not line.startswith("soak t="):
        continue
    t = float(re.search(r"t=\s*([\d.]+)s", line).group(1))
    window = int(t // window_s)
    for name, value in re.findall(r"(\w+)_mb=(\d+)", line):
        columns.setdefault(name, {}).setdefault(window, []).append(int(value))

windows = sorted({w for values in columns.values() for w in values})
print("| window (s) | " + " | ".join(f"{w * window_s}–{(w + 1) * window_s}" for w in windows) + " |")
print("|---|" + "---:|" * len(windows))
for name in ["rss", "heap", "store_write_buffers", "store_block_cache", "writer_doc_caches", "disk"]:
    if name not in columns:
        continue
    cells = []
    for w in windows:
        values = columns[name].get(w, [])
        cells.append(f"{sum(values) / len(values):.0f} ({min(values)}–{max(values)})" if values else "")
    print(f"| {name} MB, mean (min–max) | " + " | ".join(cells) + " |")
