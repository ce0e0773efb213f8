#!/usr/bin/env python3
"""Sum auto_explain's statement durations per statement, from a Postgres
log read on stdin (for example `tail -n +N postgresql-15-main.log`, from
the line count before a `disconnect-bench --batch-path-only --explain` run)."""
import collections
import re
import sys

total = collections.defaultdict(float)
count = collections.Counter()
duration = None
for line in sys.stdin:
    match = re.search(r"duration: ([\d.]+) ms  plan:", line)
    if match:
        duration = float(match.group(1))
        continue
    match = re.match(r"\s*Query Text: (.*)", line)
    if match and duration is not None:
        statement = match.group(1)[:90]
        total[statement] += duration
        count[statement] += 1
        duration = None
overall = sum(total.values()) or 1.0
for statement, ms in sorted(total.items(), key=lambda item: -item[1]):
    print(f"{ms / count[statement] * 1000:8.0f} us each {count[statement]:5d}x {100 * ms / overall:5.1f} %  {statement}")
