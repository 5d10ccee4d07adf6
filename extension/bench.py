"""The transaction workloads of `kvlite bench`, from Python through the
kvlite loadable extension, side by side with Python on a plain local SQLite
file (WAL and DELETE journals, synchronous=FULL), in one run, alternating
systems run by run. Prints medians and ratios to the better plain mode.

usage: bench.py EXTENSION SCRATCH_DIR [--server ws://HOST:PORT] [--runs N] [--tiny]

kvlite runs on the embedded store in this process (data=SCRATCH_DIR/kvlite)
and, with --server, through that server. "cold open + point query" opens a
new connection (a new page cache) and reads one row of a 16 MiB table; the
engine's own caches stay warm, as in a long-running process.
"""

import argparse
import os
import random
import sqlite3
import statistics
import time

p = argparse.ArgumentParser()
p.add_argument("extension")
p.add_argument("scratch")
p.add_argument("--server")
p.add_argument("--runs", type=int, default=5)
p.add_argument("--tiny", action="store_true", help="toy sizes, for testing the script")
args = p.parse_args()

loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(args.extension)
os.makedirs(args.scratch, exist_ok=True)
scale = 1 / 64 if args.tiny else 1
rng = random.Random(2026)


class System:
    def __init__(self, name, opener):
        self.name, self.opener = name, opener

    def open(self, db):
        return self.opener(db)


def plain(mode):
    def opener(db):
        c = sqlite3.connect(os.path.join(args.scratch, "%s-%s.sqlite" % (mode, db)), isolation_level=None)
        c.execute("PRAGMA journal_mode = %s" % mode)
        c.execute("PRAGMA synchronous = FULL")
        return c
    return opener


def kvlite(where):
    def opener(db):
        return sqlite3.connect("file:%s?vfs=kvlite&%s" % (db, where), uri=True, isolation_level=None)
    return opener


systems = [
    System("sqlite_wal", plain("WAL")),
    System("sqlite_delete", plain("DELETE")),
    System("kvlite_embedded", kvlite("data=" + os.path.join(args.scratch, "kvlite"))),
]
if args.server:
    systems.append(System("kvlite_server", kvlite("server=" + args.server)))


def txn(rows, size):
    def run(system, n):
        c = system.open("txn-%d-%d-%d" % (rows, size, n))
        c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, b BLOB)")
        c.execute("INSERT INTO t(b) VALUES (x'00')")
        data = [(rng.randbytes(size),) for _ in range(rows)]
        t = time.perf_counter()
        c.execute("BEGIN")
        c.executemany("INSERT INTO t(b) VALUES (?)", data)
        c.execute("COMMIT")
        elapsed = time.perf_counter() - t
        c.close()
        return elapsed
    return run


def small_txns(count):
    def run(system, n):
        c = system.open("small-%d" % n)
        c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, b BLOB)")
        payload = rng.randbytes(100)
        t = time.perf_counter()
        for _ in range(count):
            c.execute("INSERT INTO t(b) VALUES (?)", (payload,))
        elapsed = time.perf_counter() - t
        c.close()
        return elapsed
    return run


BIG_ROWS = int(16 * 256 * scale) or 8


def build_big(system):
    c = system.open("big")
    c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, b BLOB)")
    have = c.execute("SELECT count(*) FROM t").fetchone()[0]
    if have < BIG_ROWS:
        c.execute("BEGIN")
        c.executemany("INSERT INTO t(b) VALUES (?)", [(rng.randbytes(4000),) for _ in range(BIG_ROWS - have)])
        c.execute("COMMIT")
    c.close()


def cold_open_point(system, n):
    key = rng.randrange(1, BIG_ROWS + 1)
    t = time.perf_counter()
    c = system.open("big")
    got = c.execute("SELECT length(b) FROM t WHERE id = ?", (key,)).fetchone()[0]
    elapsed = time.perf_counter() - t
    c.close()
    assert got == 4000, got
    return elapsed


mib = lambda n: int(n * scale) or 1
workloads = [
    ("txn_5mib", txn(mib(1280), 4096)),
    ("txn_1mib_tiny", txn(mib(4096), 256)),
    ("txn_1mib_medium", txn(mib(256), 4096)),
    ("txn_1mib_onerow", txn(1, int((1 << 20) * scale))),
    ("small_txns_2000", small_txns(int(2000 * scale) or 2)),
    ("cold_open_point", cold_open_point),
]
for s in systems:
    build_big(s)

print("%-18s %-16s %5s %11s %9s" % ("workload", "system", "runs", "median ms", "vs sqlite"))
for name, run in workloads:
    samples = {s.name: [] for s in systems}
    for r in range(args.runs):
        for k in range(len(systems)):
            s = systems[(k + r) % len(systems)]
            samples[s.name].append(run(s, r))
    medians = {n: statistics.median(v) for n, v in samples.items()}
    best = min(medians["sqlite_wal"], medians["sqlite_delete"])
    for s in systems:
        m = medians[s.name]
        print("%-18s %-16s %5d %11.3f %8.2fx" % (name, s.name, args.runs, m * 1000, m / max(best, 1e-9)))
