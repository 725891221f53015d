#!/usr/bin/env python3
"""Prints bench/cryptfs/run.sh's comparison table (markdown) from its results TSV.

usage: table.py RESULTS.tsv "plain cryptfs ... gocryptfs" "context line"
Each cryptfs variant gets "% of plain" and "x gocryptfs" columns and its own target verdicts.
"""
import statistics
import sys

METRICS = [  # key, label, unit
    ("tpcb", "pgbench TPC-B", "tps"),
    ("select", "pgbench select-only", "tps"),
    ("seq_write", "seq write 1 MiB + fsync", "MB/s"),
    ("seq_write_cpu", "seq write CPU (caller + FS daemon), lower is better", "CPU-s/GiB"),
    ("seq_read", "seq read, cold cache", "MB/s"),
    ("seq_read_cpu", "seq read cold CPU (caller + FS daemon), lower is better", "CPU-s/GiB"),
    ("seq_read_warm", "seq read, warm cache", "MB/s"),
    ("seq_read_warm_cpu", "seq read warm CPU (caller + FS daemon), lower is better", "CPU-s/GiB"),
    ("rand_read", "rand 8 KiB pread, cold", "IOPS"),
    ("rand_write", "rand 8 KiB pwrite", "IOPS"),
    ("wal_flush", "WAL flush: 8 KiB write + fdatasync, lower is better", "µs"),
    ("wal_segment", "new 16 MiB WAL segment + fsync, lower is better", "ms"),
    ("files_create", "create files of 100 B (FILES in 100 dirs), lower is better", "s"),
    ("files_remove", "remove those files and dirs, lower is better", "s"),
    ("files_cpu", "create + remove CPU (caller + FS daemon), lower is better", "s"),
    ("regress_wall", "core regression suite wall time, lower is better", "s"),
    ("regress_cpu", "core regression suite CPU (server + FS daemon), lower is better", "s"),
    ("regress_failed", "core regression suite failed tests, worst round", "tests"),
    ("rss", "daemon peak RSS (VmHWM)", "MiB"),
]
UNITS = {key: (label, unit) for key, label, unit in METRICS}
# metric, comparison, threshold, against ("plain", "gocryptfs" or None for an absolute value)
TARGETS = [
    ("tpcb", ">=", 90, "plain"),
    ("select", ">=", 95, "plain"),
    ("tpcb", ">=", 2, "gocryptfs"),
    ("select", ">=", 2, "gocryptfs"),
    ("seq_write", ">=", 1000, None),
    ("seq_read", ">=", 1000, None),
    ("rss", "<=", 128, None),
    ("regress_wall", "<=", 130, "plain"),
    ("regress_failed", "<=", 0, None),
]
# How a key's samples become one value: the median, except where the worst sample matters.
AGGREGATE = {"regress_failed": max}
# Decimals shown for metrics whose values are small (default 0).
DIGITS = {"files_create": 1, "files_remove": 1, "files_cpu": 1, "wal_segment": 1,
          "seq_write_cpu": 2, "seq_read_cpu": 2, "seq_read_warm_cpu": 2}
# Metrics that no ratio describes (a count of failures).
NO_RATIO = {"regress_failed"}


def load(path):
    """Key -> median (or AGGREGATE's choice) of its space-separated samples."""
    values = {}
    with open(path) as f:
        for line in f:
            key, _, samples = line.rstrip("\n").partition("\t")
            if samples.split():
                aggregate = AGGREGATE.get(key.partition(".")[2], statistics.median)
                values[key] = aggregate(float(x) for x in samples.split())
    return values


def relative(values, fs, metric, against):
    a, b = values.get(f"{fs}.{metric}"), values.get(f"{against}.{metric}")
    if a is None or not b:
        return None
    return 100 * a / b if against == "plain" else a / b


def fmt(x, digits=0):
    return "-" if x is None else f"{x:.{digits}f}"


def main():
    values, systems, context = load(sys.argv[1]), sys.argv[2].split(), sys.argv[3]
    variants = [s for s in systems if s.startswith("cryptfs")]
    header = ["metric"] + systems
    for v in variants:
        header += [f"{v} % of plain", f"{v} × gocryptfs"]
    print(f"\n{context}\n")
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for key, label, unit in METRICS:
        row = [f"{label} ({unit})"] + [fmt(values.get(f"{s}.{key}"), DIGITS.get(key, 0)) for s in systems]
        for v in variants:
            if key in NO_RATIO:
                row += ["-", "-"]
            else:
                row += [fmt(relative(values, v, key, "plain"), 1), fmt(relative(values, v, key, "gocryptfs"), 2)]
        print("| " + " | ".join(row) + " |")
    for v in variants:
        print(f"\n| {v}: target | measured | verdict |\n|---|---:|---|")
        for key, op, threshold, against in TARGETS:
            label, unit = UNITS[key]
            sign = "≥" if op == ">=" else "≤"
            if against is None:
                measured = values.get(f"{v}.{key}")
            else:
                measured = relative(values, v, key, against)
                unit = "%" if against == "plain" else "×"
            what = f"{label} {sign} {threshold} {unit}" + {"plain": " of plain", "gocryptfs": " gocryptfs"}.get(against, "")
            if measured is None:
                verdict = "n/a"
            else:
                met = measured >= threshold if op == ">=" else measured <= threshold
                verdict = "met" if met else "MISSED"
            print(f"| {what} | {fmt(measured, 2)} {unit} | {verdict} |")


if __name__ == "__main__":
    main()
