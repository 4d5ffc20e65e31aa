"""SQLite access for the repository: one writer thread, a few reader threads, never the event loop.

Why threads and not an async driver: the stdlib `sqlite3` module is the only SQLite binding
that needs nothing installed, and SQLite calls are short and blocking; a dedicated writer
thread gives "one writer" for free (SQLite allows one anyway) and keeps every `COMMIT`'s
fsync off the event loop. WAL mode lets the readers run beside the writer, each read seeing
one consistent snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from hold.repo.errors import CorruptRepo, RepoClosed, RepoLocked

T = TypeVar("T")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS repo_root (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    did         TEXT NOT NULL,
    commit_cid  BLOB NOT NULL,
    data_cid    BLOB NOT NULL,
    rev         TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
-- Every block of the current repo state, tagged with the rev that wrote it (getRepo?since=).
CREATE TABLE IF NOT EXISTS blocks (
    cid   BLOB PRIMARY KEY,
    data  BLOB NOT NULL,
    rev   TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_by_rev ON blocks (rev);
-- An index of the tree's leaves so reads and listRecords need no tree walk.
CREATE TABLE IF NOT EXISTS records (
    collection  TEXT NOT NULL,
    rkey        TEXT NOT NULL,
    cid         BLOB NOT NULL,
    rev         TEXT NOT NULL,
    PRIMARY KEY (collection, rkey)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_cid ON records (cid);
-- The firehose log: complete frames, so replay is a plain read.
CREATE TABLE IF NOT EXISTS events (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    kind   TEXT NOT NULL,
    time   TEXT NOT NULL,
    frame  BLOB NOT NULL
);
"""


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    # isolation_level=None: transactions are opened and closed explicitly below.
    # check_same_thread=False: each connection is used by one thread at a time, but closed by
    # `close()` after its executor has stopped.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    if readonly:
        conn.execute("PRAGMA query_only = 1")
    else:
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit the firehose has announced must survive a power cut, not only a crash.
        conn.execute("PRAGMA synchronous = FULL")
    return conn


class Store:
    """The repository database; `write` and `read` run a function in a transaction off-loop."""

    def __init__(self, path: Path, readers: int = 4) -> None:
        self.path = path
        self._writer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="repo-writer")
        self._reader_pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="repo-reader")
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._closed = False
        # Test hook: called inside the write transaction just before COMMIT. Raising from it
        # (or killing the process) shows that a half-done commit leaves the old head in place.
        self.before_commit: Callable[[], None] | None = None

    @classmethod
    async def open(cls, path: Path, readers: int = 4) -> Store:
        store = cls(path, readers)
        try:
            await asyncio.get_running_loop().run_in_executor(store._writer_pool, store._init_writer)
        except BaseException:
            await store.close()
            raise
        return store

    def _take_lock(self) -> None:
        """One process per repository: the head lives in memory, so a second writer would fork it.

        SQLite would happily let two processes share the file (each commit is atomic), but
        each would build on its own idea of the head. An exclusive lock on a side file turns
        that into an error at start, and the OS drops it if the process dies.
        """
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RepoLocked(f"{self.path} is open in another process (or another Repo in this one)") from None
        self._lock_fd = fd

    def _init_writer(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        conn = _connect(self.path, readonly=False)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            conn.close()
            raise CorruptRepo(f"{self.path}: schema version {version} is newer than this code ({SCHEMA_VERSION})")
        # executescript() would COMMIT on its own; statement by statement keeps one transaction.
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
        self._writer = conn
        self._track(conn)

    def _track(self, conn: sqlite3.Connection) -> None:
        with self._conns_lock:
            self._conns.append(conn)

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, readonly=True)
            self._local.conn = conn
            self._track(conn)
        return conn

    def _run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._writer
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            if self.before_commit is not None:
                self.before_commit()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return result

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._reader_conn()
        conn.execute("BEGIN")  # deferred: the first SELECT pins one snapshot for the whole call
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in the writer thread inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""
        if self._closed:
            raise RepoClosed()
        return await asyncio.get_running_loop().run_in_executor(self._writer_pool, self._run_write, fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in a reader thread on one consistent snapshot."""
        if self._closed:
            raise RepoClosed()
        return await asyncio.get_running_loop().run_in_executor(self._reader_pool, self._run_read, fn)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._writer_pool.shutdown(wait=True)
        self._reader_pool.shutdown(wait=True)
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
