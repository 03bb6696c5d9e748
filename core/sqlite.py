"""SQLite settings every llmkit database shares (rag's collections, the sentiment app's store)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def set_wal(db: sqlite3.Connection, path: Path, busy_seconds: float) -> None:
    """WAL mode, persistent: set once per file. Switching needs the file to itself, and SQLite answers "locked"
    at once, without waiting as other statements do, while another connection uses it (two processes creating
    one database): so retry for up to `busy_seconds`."""
    deadline = time.monotonic() + busy_seconds
    while db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            if db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal":
                return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e):
                raise
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError(f"{path}: database is locked (switching it to WAL)")
        time.sleep(0.05)


@contextmanager
def immediate_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE (the write lock taken up front, so two writers wait rather than deadlock), then COMMIT, or
    ROLLBACK on any exception. For a connection opened with isolation_level=None."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
