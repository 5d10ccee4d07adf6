"""kvlite from Python: SQLite databases that live in kvlite (a `kvlite serve`
server, or the embedded store in this process) instead of a local file.

    import kvlite
    db = kvlite.connect("app", server="ws://127.0.0.1:7435")   # a sqlite3.Connection
    db = kvlite.connect("app", data="kvlite-data")              # the embedded store
    a = kvlite.connect_apsw("app", server="ws://127.0.0.1:7435")  # an apsw.Connection

The kvlite loadable extension (bundled in this package) is loaded once per
process into the interpreter's own SQLite and registers the `kvlite` VFS;
every database opened on it commits each transaction as one kvlite commit.
"""

import os
import sqlite3
from urllib.parse import quote

__all__ = ["connect", "connect_apsw", "extension_path", "uri", "KvliteError"]

_loaded = set()


class KvliteError(RuntimeError):
    """The extension cannot be used from this interpreter."""


def extension_path():
    """The bundled extension, without its `.so` suffix (as SQLite takes it)."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "libkvlite.so")
    if not os.path.exists(path):
        raise KvliteError("the kvlite extension is missing from the package (%s)" % path)
    return path[: -len(".so")]


def uri(name, server=None, token=None, data=None, postgres=None):
    """The SQLite URI naming database `name` on kvlite."""
    params = [("vfs", "kvlite")]
    for key, value in (("server", server), ("token", token), ("data", data), ("postgres", postgres)):
        if value is not None:
            params.append((key, str(value)))
    query = "&".join("%s=%s" % (k, quote(v, safe="/:")) for k, v in params)
    return "file:%s?%s" % (quote(name, safe=""), query)


def _load_sqlite3():
    if "sqlite3" in _loaded:
        return
    loader = sqlite3.connect(":memory:")
    enable = getattr(loader, "enable_load_extension", None)
    if enable is None:
        loader.close()
        raise KvliteError(
            "this Python's sqlite3 module cannot load SQLite extensions (it was built "
            "without --enable-loadable-sqlite-extensions): `pip install apsw` and use "
            "kvlite.connect_apsw(), or run another interpreter (e.g. Debian's /usr/bin/python3)"
        )
    enable(True)
    loader.load_extension(extension_path())
    loader.close()
    _loaded.add("sqlite3")


def connect(name, server=None, token=None, data=None, postgres=None, **kwargs):
    """A `sqlite3.Connection` to kvlite database `name`; other keyword
    arguments go to `sqlite3.connect`."""
    _load_sqlite3()
    return sqlite3.connect(uri(name, server, token, data, postgres), uri=True, **kwargs)


def connect_apsw(name, server=None, token=None, data=None, postgres=None):
    """An `apsw.Connection` to kvlite database `name` (apsw carries its own
    extension loading, for interpreters whose sqlite3 module cannot)."""
    try:
        import apsw
    except ImportError as e:
        raise KvliteError("connect_apsw needs apsw: pip install apsw") from e
    if "apsw" not in _loaded:
        loader = apsw.Connection(":memory:")
        # apsw before 3.42 spells them without underscores.
        enable = getattr(loader, "enable_load_extension", None) or loader.enableloadextension
        load = getattr(loader, "load_extension", None) or loader.loadextension
        enable(True)
        load(extension_path())
        loader.close()
        _loaded.add("apsw")
    flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI
    return apsw.Connection(uri(name, server, token, data, postgres), flags=flags)
