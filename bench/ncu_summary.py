"""Summaries of an Nsight Compute report's CSV pages (bench/run_h200_ncu.sh): per kernel, the
headline metrics of the details page and the warp-stall reasons of the raw page, largest first.

    python bench/ncu_summary.py DETAILS.csv RAW.csv
"""
from __future__ import annotations

import csv
import re
import sys

WANT = ("Duration", "DRAM Throughput", "Compute (SM) Throughput", "Issue Slots Busy", "Issued Ipc Active",
        "No Eligible", "Achieved Occupancy", "Theoretical Occupancy", "Registers Per Thread",
        "Executed Instructions", "Warp Cycles Per Issued Instruction", "Block Limit Registers")
STALL = re.compile(r"smsp__average_warps_issue_stalled_(\w+)_per_issue_active\.ratio$")


def main(details: str, raw: str | None = None) -> None:
    try:
        rows = list(csv.DictReader(open(details)))
    except (OSError, csv.Error) as e:
        print("no details:", e)
        rows = []
    for r in rows:
        if r.get("Metric Name") in WANT:
            print(f"{r.get('Kernel Name', '')[:36]:36s} {r['Metric Name'][:36]:36s} {r['Metric Value']:>14s} "
                  f"{r.get('Metric Unit', '')}")
    if not raw:
        return
    try:
        table = list(csv.reader(open(raw)))
    except (OSError, csv.Error) as e:
        print("no raw page:", e)
        return
    if len(table) < 3:
        return
    head = table[0]
    name_col = head.index("Kernel Name") if "Kernel Name" in head else None
    for row in table[2:]:  # row 1: units
        stalls = []
        for i, col in enumerate(head):
            m = STALL.match(col)
            if m and i < len(row):
                try:
                    stalls.append((float(row[i].replace(",", "")), m.group(1)))
                except ValueError:
                    pass
        kernel = row[name_col][:40] if name_col is not None else "?"
        top = sorted(stalls, reverse=True)[:8]
        print(f"{kernel:40s} stalls (cycles per issued instruction): "
              + ", ".join(f"{n} {v:.2f}" for v, n in top))


if __name__ == "__main__":
    main(*sys.argv[1:3])
