"""The email bot's ledger: one SQLite row per incoming message and one event per state change, so nothing is lost,
answered twice, or done without a record of why.

A row is keyed by (account, mailbox, UIDVALIDITY, UID), the IMAP identity of a message, and also found by its
Message-ID: when a mailbox's UIDVALIDITY changes (the server renumbered it), `add` recognises the messages it
already has by Message-ID and moves their row to the new UIDs instead of answering them again.

States follow one machine (TRANSITIONS): seen -> triaged -> drafted -> approved -> sending -> sent, or skipped /
quarantined / failed / rejected with a reason. The reply's Message-ID is fixed when the draft is made, and
"sending" is written before the SMTP transaction and "sent" after, so a crash between the two leaves an item in
"sending" that the service resolves on restart by looking for that Message-ID in the Sent folder.

The database is in WAL mode and every transition is one IMMEDIATE transaction that re-reads the state it changes,
so the CLI (`llmkit email approve`) and the running service can both open it: the loser of a race gets
InvalidTransition, never a half-applied change.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

STATES = ("seen", "triaged", "drafted", "approved", "sending", "sent", "skipped", "quarantined", "failed", "rejected")

TRANSITIONS = {  # state -> the states it may move to; a state that is its own successor may be rewritten
    "seen": {"seen", "triaged", "skipped", "quarantined", "failed"},  # seen -> seen: a UIDVALIDITY re-sync
    "triaged": {"drafted", "skipped", "failed"},
    "drafted": {"drafted", "approved", "rejected", "failed"},  # drafted -> drafted: a re-draft
    "approved": {"sending", "rejected", "failed"},
    "sending": {"sent", "approved", "failed"},  # approved again: a 4xx answer, or not found in Sent after a crash
    "rejected": {"drafted"},  # re-drafted after a rejection
    "sent": set(), "skipped": set(), "quarantined": set(), "failed": set(),
}

# Columns `set_state` may change beside the state (the identity columns only through `add`'s re-sync).
FIELDS = ("sender", "subject", "label", "urgency", "confidence", "original", "draft", "sources",
          "reply_message_id", "reply", "attempts", "next_attempt_at")

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    state TEXT NOT NULL, reason TEXT,
    sender TEXT NOT NULL DEFAULT '', subject TEXT NOT NULL DEFAULT '',
    received_at REAL NOT NULL, updated_at REAL NOT NULL,
    label TEXT, urgency TEXT, confidence REAL,
    original TEXT NOT NULL DEFAULT '',
    draft TEXT, sources TEXT NOT NULL DEFAULT '[]',
    reply_message_id TEXT, reply BLOB,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL DEFAULT 0,
    raw BLOB,
    UNIQUE (account, mailbox, uidvalidity, uid)
);
CREATE INDEX IF NOT EXISTS items_message_id ON items (account, message_id);
CREATE INDEX IF NOT EXISTS items_state ON items (state);
CREATE INDEX IF NOT EXISTS items_sender ON items (sender, received_at);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES items (id),
    at REAL NOT NULL, from_state TEXT, to_state TEXT NOT NULL, reason TEXT
);
CREATE INDEX IF NOT EXISTS events_item ON events (item_id);
CREATE TABLE IF NOT EXISTS mailboxes (
    account TEXT NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, last_uid INTEGER NOT NULL,
    last_poll REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (account, mailbox)
);
"""

ITEM_COLUMNS = ("id, account, mailbox, uidvalidity, uid, message_id, state, reason, sender, subject, received_at, "
                "updated_at, label, urgency, confidence, original, draft, sources, reply_message_id, reply, attempts, "
                "next_attempt_at")


class InvalidTransition(ValueError):
    """A state change the machine does not allow (e.g. approving an item that was already sent)."""


@dataclass
class Item:
    """One incoming message and what became of it."""
    id: int
    account: str
    mailbox: str
    uidvalidity: int
    uid: int
    message_id: str
    state: str
    reason: str | None
    sender: str
    subject: str
    received_at: float
    updated_at: float
    label: str | None
    urgency: str | None
    confidence: float | None
    original: str
    draft: str | None
    sources: list[dict] = field(default_factory=list)
    reply_message_id: str | None = None
    reply: bytes | None = None
    attempts: int = 0  # SMTP transactions tried for this reply
    next_attempt_at: float = 0.0  # after a 4xx answer: not before this time


def _item(row) -> Item:
    values = list(row)
    values[17] = json.loads(values[17] or "[]")
    if values[19] is not None:
        values[19] = bytes(values[19])
    return Item(*values)


class Ledger:
    """The SQLite ledger at `path` (created with its folder if missing). Thread-safe: one connection behind a lock;
    process-safe: WAL and IMMEDIATE transactions with a busy timeout."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a "sending" row must be on disk before the SMTP transaction
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._lock:
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self):
        """One IMMEDIATE transaction (takes the write lock up front, so a read-check-write is atomic across
        processes)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _get(self, db, id) -> Item:
        row = db.execute(f"SELECT {ITEM_COLUMNS} FROM items WHERE id = ?", (id,)).fetchone()
        if row is None:
            raise KeyError(f"no ledger item {id}")
        return _item(row)

    def _event(self, db, id, from_state, to_state, reason, at) -> None:
        db.execute("INSERT INTO events (item_id, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)",
                   (id, at, from_state, to_state, reason))

    def add(self, account, mailbox, uidvalidity, uid, message_id, raw: bytes | None = None, **fields) -> Item | None:
        """Record a new message as "seen"; None if it is already known, by its IMAP identity or, for the same
        account, by its Message-ID (a renumbered mailbox or a copy in a second watched mailbox: the row moves to
        the new identity when it is the same mailbox, and nothing is answered twice)."""
        now = time.time()
        with self._write() as db:
            if db.execute("SELECT 1 FROM items WHERE account = ? AND mailbox = ? AND uidvalidity = ? AND uid = ?",
                          (account, mailbox, uidvalidity, uid)).fetchone():
                return None
            known = db.execute("SELECT id, mailbox, uidvalidity, uid, state FROM items WHERE account = ? AND "
                               "message_id = ? ORDER BY id LIMIT 1", (account, message_id)).fetchone()
            if known:
                id, known_mailbox, known_validity, known_uid, state = known
                if known_mailbox == mailbox and known_validity != uidvalidity:
                    db.execute("UPDATE items SET uidvalidity = ?, uid = ?, updated_at = ? WHERE id = ?",
                               (uidvalidity, uid, now, id))
                    self._event(db, id, state, state, f"re-synced by Message-ID: UIDVALIDITY {known_validity} -> "
                                f"{uidvalidity}, UID {known_uid} -> {uid}", now)
                return None
            unknown = set(fields) - set(FIELDS)
            if unknown:
                raise TypeError(f"unknown ledger fields: {sorted(unknown)}")
            columns = ["account", "mailbox", "uidvalidity", "uid", "message_id", "state", "received_at",
                       "updated_at", "raw", *fields]
            values = [account, mailbox, uidvalidity, uid, message_id, "seen", now, now, raw,
                      *(_encode(name, value) for name, value in fields.items())]
            cursor = db.execute(f"INSERT INTO items ({', '.join(columns)}) VALUES ({', '.join('?' * len(values))})",
                                values)
            self._event(db, cursor.lastrowid, None, "seen", None, now)
            return self._get(db, cursor.lastrowid)

    def get(self, id) -> Item:
        with self._lock:
            return self._get(self._db, id)

    def raw(self, id) -> bytes | None:
        """The incoming message's bytes as fetched (to rebuild a reply after an edit, or re-draft)."""
        with self._lock:
            row = self._db.execute("SELECT raw FROM items WHERE id = ?", (id,)).fetchone()
        if row is None:
            raise KeyError(f"no ledger item {id}")
        return None if row[0] is None else bytes(row[0])

    def set_state(self, id, state, reason=None, *, expect: str | tuple[str, ...] | None = None, **fields) -> Item:
        """Move item `id` to `state` (recorded in `events` with the time and `reason`) and set `fields` in the same
        transaction. InvalidTransition if the machine does not allow it, or if `expect` is given and the item is
        not (any more) in that state, e.g. another process approved or rejected it first."""
        if state not in STATES:
            raise InvalidTransition(f"unknown state {state!r}")
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise TypeError(f"unknown ledger fields: {sorted(unknown)}")
        now = time.time()
        with self._write() as db:
            current = self._get(db, id).state
            if expect is not None and current not in ((expect,) if isinstance(expect, str) else expect):
                raise InvalidTransition(f"item {id} is {current}, not {expect}")
            if state not in TRANSITIONS[current]:
                raise InvalidTransition(f"item {id}: {current} -> {state} is not allowed")
            assignments = ", ".join(f"{name} = ?" for name in ("state", "reason", "updated_at", *fields))
            db.execute(f"UPDATE items SET {assignments} WHERE id = ?",
                       (state, reason, now, *(_encode(name, value) for name, value in fields.items()), id))
            self._event(db, id, current, state, reason, now)
            return self._get(db, id)

    def items(self, states=None, limit=200) -> list[Item]:
        """Items in `states` (a name or a list; None: all), newest first."""
        if isinstance(states, str):
            states = [states]
        query, args = f"SELECT {ITEM_COLUMNS} FROM items", []
        if states:
            query += f" WHERE state IN ({', '.join('?' * len(states))})"
            args = list(states)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, int(limit))).fetchall()
        return [_item(row) for row in rows]

    def due(self, now: float | None = None) -> list[Item]:
        """Approved items whose next attempt is due, oldest first: what the sender sends next."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(f"SELECT {ITEM_COLUMNS} FROM items WHERE state = 'approved' AND "
                                    "next_attempt_at <= ? ORDER BY id", (now,)).fetchall()
        return [_item(row) for row in rows]

    def find(self, account, message_ids) -> list[Item]:
        """The account's items whose message, or whose reply, has one of `message_ids`; oldest first."""
        ids = list(message_ids)
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(f"SELECT {ITEM_COLUMNS} FROM items WHERE account = ? AND (message_id IN ({marks})"
                                    f" OR reply_message_id IN ({marks})) ORDER BY id", (account, *ids, *ids)).fetchall()
        return [_item(row) for row in rows]

    def events(self, id) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT at, from_state, to_state, reason FROM events WHERE item_id = ? "
                                    "ORDER BY id", (id,)).fetchall()
        return [{"at": at, "from": from_state, "to": to_state, "reason": reason}
                for at, from_state, to_state, reason in rows]

    def sent_count_from(self, sender, since_seconds=3600) -> int:
        """Messages from `sender` received in the last `since_seconds` that we answered or are answering (drafted
        up to sent): the per-sender rate limit and loop guard counts these."""
        with self._lock:
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM items WHERE sender = ? AND received_at >= ? AND state IN "
                "('drafted', 'approved', 'sending', 'sent')", (sender, time.time() - since_seconds)).fetchone()
        return count

    def counts(self) -> dict[str, int]:
        """Items per state, every state present (0 when none)."""
        with self._lock:
            rows = dict(self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
        return {state: rows.get(state, 0) for state in STATES}

    def approve(self, id, edited_draft: str | None = None) -> Item:
        """drafted -> approved: the service sends it. An edited draft replaces the text and drops the built reply,
        which the sender rebuilds from it (same reply Message-ID)."""
        fields = {}
        if edited_draft is not None and edited_draft != self.get(id).draft:
            fields = {"draft": edited_draft, "reply": None}
        return self.set_state(id, "approved", "approved", expect="drafted", **fields)

    def reject(self, id, reason="") -> Item:
        return self.set_state(id, "rejected", reason or "rejected", expect=("drafted", "approved"))

    def mailbox_state(self, account, mailbox) -> tuple[int, int] | None:
        """(UIDVALIDITY, last UID processed) of a watched mailbox, None before its first sync."""
        with self._lock:
            row = self._db.execute("SELECT uidvalidity, last_uid FROM mailboxes WHERE account = ? AND mailbox = ?",
                                   (account, mailbox)).fetchone()
        return None if row is None else (row[0], row[1])

    def set_mailbox_state(self, account, mailbox, uidvalidity, last_uid) -> None:
        now = time.time()
        with self._write() as db:
            db.execute("INSERT INTO mailboxes (account, mailbox, uidvalidity, last_uid, last_poll) VALUES "
                       "(?, ?, ?, ?, ?) ON CONFLICT (account, mailbox) DO UPDATE SET "
                       "uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid, "
                       "last_poll = excluded.last_poll",
                       (account, mailbox, uidvalidity, last_uid, now))

    def last_poll(self) -> float | None:
        """When any watched mailbox was last checked (None: never)."""
        with self._lock:
            (value,) = self._db.execute("SELECT MAX(last_poll) FROM mailboxes").fetchone()
        return value


def _encode(name, value):
    return json.dumps(value) if name == "sources" else value
