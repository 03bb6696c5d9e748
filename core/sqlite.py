"""SQLite settings every llmkit database shares (rag's collections, the sentiment app's store)."""

from __future__ import annotations

import sqlite3
import time
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
