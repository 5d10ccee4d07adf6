#!/usr/bin/env python3
"""Per-commit syscall counts for `embedded-choice --only small-commit` run under

    strace -f -s 128 -o TRACE -e trace=fsync,fdatasync,pwrite64,write,... \
        embedded-choice --only small-commit DIR

Counts the calls (all threads) between the tool's `@@mark NAME start` and
`@@mark NAME commits-done` (the measured commits) and `@@mark NAME end`
(also settling and closing the store), divided by the commit count.
Usage: strace-window.py TRACE [COMMITS=2000]
"""
import re
import sys
from collections import Counter

trace = sys.argv[1]
commits = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
call = re.compile(r'^(?:\[pid\s+)?\d*\]?\s*(\w+)\(')
markre = re.compile(r'write\(2, "@@mark (\S+) (\S+)\\n"')

windows = {}  # name -> {"commits": Counter, "total": Counter}
cur = None
phase = None
for line in open(trace):
    m = markre.search(line)
    if m:
        name, what = m.groups()
        if what == "start":
            cur, phase = name, "commits"
            windows[name] = {"commits": Counter(), "total": Counter()}
        elif what == "commits-done":
            phase = "after"
        elif what == "end":
            cur = phase = None
        continue
    if cur is None:
        continue
    m = call.match(line)
    if not m or "resumed>" in line.split("(", 1)[0]:
        continue
    sc = m.group(1)
    windows[cur]["total"][sc] += 1
    if phase == "commits":
        windows[cur]["commits"][sc] += 1

syncs = ("fsync", "fdatasync", "sync_file_range", "msync", "syncfs")
writes = ("write", "pwrite64", "writev", "pwritev", "pwritev2")
print(f"per commit ({commits} commits); 'total' also includes settle + close")
print("| store | fsync+fdatasync | write+pwrite | total: fsync+fdatasync | total: write+pwrite | other |")
print("|---|---|---|---|---|---|")
for name, w in windows.items():
    c, t = w["commits"], w["total"]
    other = {k: v for k, v in t.items() if k not in ("fsync", "fdatasync", "write", "pwrite64")}
    print(f"| {name} | {sum(c[s] for s in syncs)/commits:.3f} | {sum(c[s] for s in writes)/commits:.3f} "
          f"| {sum(t[s] for s in syncs)/commits:.3f} | {sum(t[s] for s in writes)/commits:.3f} "
          f"| {dict(other) if other else ''} |")
    print(f"|   raw | {dict(c)} | | {dict(t)} | | |")
