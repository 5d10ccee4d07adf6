"""A random workload run side by side on plain SQLite (a local file) and on
kvlite through the loadable extension, through Python's sqlite3 module:
tables, inserts of every type (large blobs too), updates, deletes, indexes,
explicit transactions committed and rolled back, VACUUM, reopening the kvlite
connection. After every step both must agree: same success or failure, same
rows, and integrity_check ok at the end.

usage: differential.py EXTENSION KVLITE_URI PLAIN_FILE SEED STEPS
"""

import random
import sqlite3
import sys

ext, uri, plain, seed, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(ext)


def open_kvlite():
    return sqlite3.connect(uri, uri=True, isolation_level=None)


rng = random.Random(seed)
ref = sqlite3.connect(plain, isolation_level=None)
kv = open_kvlite()
tables = 0
in_txn = False


def value():
    k = rng.randrange(6)
    if k == 0:
        return None
    if k == 1:
        return rng.randrange(-10**12, 10**12)
    if k == 2:
        return rng.random() * 1e6
    if k == 3:
        return "".join(rng.choice("abcxyz ") for _ in range(rng.randrange(0, 60)))
    if k == 4:
        return rng.randbytes(rng.randrange(0, 300))
    return rng.randbytes(rng.choice([5000, 40000, 200000]))


def both(sql, params=()):
    outcome = []
    for db in (ref, kv):
        try:
            rows = db.execute(sql, params).fetchall()
            outcome.append(("ok", rows))
        except sqlite3.Error as e:
            outcome.append(("error", type(e).__name__))
    if outcome[0][0] != outcome[1][0] or (outcome[0][0] == "ok" and outcome[0][1] != outcome[1][1]):
        print("MISMATCH at step %d: %s\nplain:  %.300s\nkvlite: %.300s" % (step, sql, outcome[0], outcome[1]))
        sys.exit(1)
    return outcome[0]


for step in range(steps):
    op = rng.randrange(12)
    t = "t%d" % rng.randrange(max(tables, 1))
    if op == 0 or tables == 0:
        both("CREATE TABLE t%d(a, b, c)" % tables)
        tables += 1
    elif op <= 3:
        both("INSERT INTO %s VALUES (?, ?, ?)" % t, (value(), value(), value()))
    elif op == 4:
        both("UPDATE %s SET b = ? WHERE rowid %% 3 = ?" % t, (value(), rng.randrange(3)))
    elif op == 5:
        both("DELETE FROM %s WHERE rowid %% 5 = ?" % t, (rng.randrange(5),))
    elif op == 6:
        both("CREATE INDEX IF NOT EXISTS %s_a ON %s(a)" % (t, t))
    elif op == 7:
        if in_txn:
            both(rng.choice(["COMMIT", "ROLLBACK"]))
            in_txn = False
        else:
            both("BEGIN")
            in_txn = True
    elif op == 8 and not in_txn and rng.random() < 0.2:
        both("VACUUM")
    elif op == 9 and not in_txn and rng.random() < 0.3:
        kv.close()
        kv = open_kvlite()
    elif op == 10:
        both("INSERT INTO %s SELECT b, c, a FROM %s LIMIT 20" % (t, t))
    both("SELECT rowid, * FROM %s ORDER BY rowid" % t)
if in_txn:
    both("COMMIT")
for i in range(tables):
    both("SELECT rowid, * FROM t%d ORDER BY rowid" % i)
kv.close()
kv = open_kvlite()
for i in range(tables):
    both("SELECT rowid, * FROM t%d ORDER BY rowid" % i)
print(both("PRAGMA integrity_check")[1][0][0])
