#!/usr/bin/env python3
"""Summary of bench/operator.sh's log: events/s and server CPU per event by mode, each
mode's ratio to `plain` of the same round, and the medians, as Markdown for
BENCHMARKS.md. Usage: bench/operator_summary.py bench-work/operator.log"""
import re
import statistics
import sys

rounds = []
for line in open(sys.argv[1]):
    if line.startswith("# round"):
        rounds.append({})
    elif line.startswith("## ") and rounds:
        mode = line.split()[1]
        rate = float(re.search(r"events_per_s=([\d.]+)", line).group(1))
        cpu = float(re.search(r"server_cpu_us_per_event=([\d.]+)", line).group(1))
        rounds[-1][mode] = (rate, cpu)

modes = [m for m in ["plain", "watched", "watched0", "archived"] if any(m in r for r in rounds)]
print("| round | " + " | ".join(f"{m} events/s" for m in modes) + " | server µs/event " + " / ".join(modes) + " |")
print("|---|" + "---:|" * len(modes) + "---|")
ratios = {m: [] for m in modes}
for index, r in enumerate(rounds, 1):
    cells = []
    for m in modes:
        if m not in r:
            cells.append("")
            continue
        rate = r[m][0]
        if m != "plain" and "plain" in r:
            ratio = rate / r["plain"][0] - 1
            ratios[m].append(ratio)
            cells.append(f"{rate:,.0f} ({ratio:+.1%})")
        else:
            cells.append(f"{rate:,.0f}")
    cpus = " / ".join(f"{r[m][1]:.2f}" if m in r else "" for m in modes)
    print(f"| {index} | " + " | ".join(cells) + f" | {cpus} |")
medians = []
for m in modes:
    rates = [r[m][0] for r in rounds if m in r]
    cpus = [r[m][1] for r in rounds if m in r]
    text = f"{statistics.median(rates):,.0f}"
    if ratios.get(m):
        text += f" (round ratios: median {statistics.median(ratios[m]):+.1%}, mean {statistics.mean(ratios[m]):+.1%})"
    medians.append(text)
    print(f"- {m}: server µs/event median {statistics.median(cpus):.2f}", file=sys.stderr)
print("| median | " + " | ".join(medians) + " | |")
