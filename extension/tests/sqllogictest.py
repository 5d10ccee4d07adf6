"""Run sqllogictest files through Python's sqlite3 module and the kvlite
loadable extension: the classic corpus formatting (NULL, (empty), reals with
three decimals, one value per line, results over the hash threshold as an
MD5), skipif/onlyif for the label "sqlite".

usage: sqllogictest.py EXTENSION URI_PREFIX FILE...
Each file runs on its own database, URI_PREFIX + a name (e.g.
"file:slt-{n}?vfs=kvlite&data=DIR" with {n} replaced). Prints one line per
file; exits 1 if any record failed.
"""

import decimal
import hashlib
import sqlite3
import sys

decimal.getcontext().prec = 60


def real(f):
    """Three decimals of a real rounded to 16 significant digits first (how
    the corpus's expected results were printed: -2**63 prints as
    -9223372036854776000.000)."""
    return str(decimal.Decimal("%.16g" % float(f)).quantize(decimal.Decimal("0.001")))


def leading_number(s, kind):
    """What SQLite's column_int64 / column_double make of text."""
    import re
    m = re.match(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", s)
    if not m:
        return 0 if kind == "I" else 0.0
    try:
        f = float(m.group(0))
    except ValueError:
        return 0
    return int(f) if kind == "I" else f


def fmt(v, kind="T"):
    """A value as the classic runner prints a column of type `kind`."""
    if v is None:
        return "NULL"
    if kind == "I":
        if isinstance(v, float):
            return str(int(v))
        if isinstance(v, (str, bytes)):
            text = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            return str(leading_number(text, "I"))
    if kind == "R":
        if isinstance(v, (int, float)):
            return real(v)
        if isinstance(v, (str, bytes)):
            text = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            return real(leading_number(text, "R"))
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return real(v)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return "(empty)" if v == "" else v


def records(text):
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line or line.startswith("#"):
            i += 1
            continue
        block = []
        while i < len(lines) and lines[i].strip():
            block.append(lines[i].rstrip())
            i += 1
        yield block


def run_file(db, text):
    threshold = 8
    done = 0
    for block in records(text):
        conditions = []
        while block and block[0].split()[0] in ("skipif", "onlyif"):
            words = block.pop(0).split("#")[0].split()
            conditions.append((words[0], words[1]))
        if not block:
            continue
        skip = any(
            (kind == "skipif" and engine == "sqlite") or (kind == "onlyif" and engine != "sqlite")
            for kind, engine in conditions
        )
        head = block[0].split()
        if skip:
            continue
        if head[0] == "halt":
            break
        if head[0] == "hash-threshold":
            threshold = int(head[1])
            continue
        if head[0] == "statement":
            sql = "\n".join(block[1:])
            try:
                # A record may hold several statements; with autocommit
                # (isolation_level None) executescript adds no COMMIT.
                db.executescript(sql)
                ok = True
            except sqlite3.Error:
                ok = False
            if ok != (head[1] == "ok"):
                return done, "statement %s failed: %s" % (head[1], sql)
            done += 1
            continue
        if head[0] == "query":
            types = head[1]
            sort = head[2] if len(head) > 2 else "nosort"
            sep = block.index("----") if "----" in block else len(block)
            sql = "\n".join(block[1:sep])
            expected = block[sep + 1:]
            try:
                rows = [
                    [fmt(v, types[i] if i < len(types) else "T") for i, v in enumerate(row)]
                    for row in db.execute(sql).fetchall()
                ]
            except sqlite3.Error as e:
                # An error prints no rows: the corpus expects nothing there.
                if expected:
                    return done, "query failed: %s: %s" % (e, sql)
                rows = []
            if sort == "rowsort":
                rows.sort()
            values = [v for row in rows for v in row]
            if sort == "valuesort":
                values.sort()
            if threshold > 0 and len(values) > threshold:
                md5 = hashlib.md5("".join(v + "\n" for v in values).encode()).hexdigest()
                got = ["%d values hashing to %s" % (len(values), md5)]
            else:
                got = values
            if got != expected:
                return done, "query results differ: %s\nexpected %s\ngot %s" % (
                    sql, expected[:10], got[:10])
            done += 1
            continue
        return done, "unknown record: %s" % block[0]
    return done, None


def main():
    ext, prefix, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(ext)
    failed = 0
    for n, path in enumerate(files):
        db = sqlite3.connect(prefix.replace("{n}", str(n)), uri=True, isolation_level=None)
        with open(path, encoding="utf-8") as f:
            done, error = run_file(db, f.read())
        db.close()
        if error:
            failed += 1
            print("FAIL %s after %d records: %s" % (path, done, error))
        else:
            print("ok %s: %d records" % (path, done))
    sys.exit(1 if failed else 0)


main()
