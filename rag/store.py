"""The metadata store: documents and chunk texts in SQLite, keyed by the same int64 ids as the vector index.

One file (`store.sqlite`, WAL mode, `synchronous=FULL`) with three tables: `meta` (format name and version,
checked on open), `documents` (one row per file or text item, keyed by the sha256 of its content, with its
metadata as JSON) and `chunks` (one row per chunk, with its locator; its `id` is the chunk's vector id in
the index). A store of an older version is migrated when opened (see `_MIGRATIONS`), in one transaction.
Chunk ids come from AUTOINCREMENT, so an id is never handed out twice, even after its document is removed:
an old vector or citation can never point at a different chunk.

Every document has a `state`: "ready" (searchable), "pending" (being added) or "removing" (being removed).
The store does not know about the index; `rag.collection` uses the states as its write-ahead record (see
there). Reads that serve search and listing (`documents`, `has_document`, `all_chunks`) see ready documents
only. Several processes may open one store: WAL lets them read while one writes, and `snapshot()` makes several
reads see one moment.

Does not: store vectors (the index does), order writers across processes (`rag.collection`'s write lock does;
SQLite only makes each transaction atomic), or use pickle.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from core.sqlite import immediate_transaction, set_wal
from rag.chunking import Chunk, page_locator
from rag.loaders import LoadReport

FORMAT = "llmkit-metadata-store"
FORMAT_VERSION = 3
STATES = ("pending", "ready", "removing")
BUSY_SECONDS = 30.0  # sqlite3.connect timeout: see MetadataStore.__init__
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (
    doc_id TEXT PRIMARY KEY,            -- sha256 hex of the file's bytes (of a text item: see rag.loaders)
    file_name TEXT NOT NULL,
    path TEXT NOT NULL,
    pages_total INTEGER NOT NULL,
    pages_needing_ocr TEXT NOT NULL,    -- JSON list of 1-based page numbers
    added_at TEXT NOT NULL,             -- ISO 8601, UTC
    state TEXT NOT NULL CHECK (state IN ('pending', 'ready', 'removing')),
    metadata TEXT NOT NULL DEFAULT '{}'  -- JSON object (version 2)
);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the vector id in the index
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    page INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    text TEXT NOT NULL,
    locator TEXT NOT NULL DEFAULT '',      -- where in the document: "p. 3", "L12-30", ... (version 2)
    context TEXT NOT NULL DEFAULT ''       -- indexed before the text, never cited: rag.context (version 3)
);
CREATE INDEX chunks_by_doc ON chunks(doc_id);
CREATE INDEX documents_by_name ON documents(file_name);
"""
_CHUNK_COLUMNS = 'c.id, c.doc_id, d.file_name, c.page, c.start, c."end", c.text, c.locator, c.context'


def _add_metadata_and_locators(db: sqlite3.Connection) -> None:
    """Version 1 -> 2: documents get metadata, chunks a locator; every chunk so far came from a page."""
    db.execute("ALTER TABLE documents ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}'")
    db.execute("ALTER TABLE chunks ADD COLUMN locator TEXT NOT NULL DEFAULT ''")
    pages = [row[0] for row in db.execute("SELECT DISTINCT page FROM chunks")]
    db.executemany("UPDATE chunks SET locator = ? WHERE page = ?", [(page_locator(page), page) for page in pages])


def _add_context(db: sqlite3.Connection) -> None:
    """Version 2 -> 3: chunks get a context; those stored so far have none (indexed as before, until re-indexed)."""
    db.execute("ALTER TABLE chunks ADD COLUMN context TEXT NOT NULL DEFAULT ''")


# Version n -> n + 1, each in the transaction that records the new version. The columns a migration adds come
# last, as `_SCHEMA` declares them, so a migrated store and a new one have the same tables.
_MIGRATIONS = {1: _add_metadata_and_locators, 2: _add_context}


class StoreFormatError(ValueError):
    """The file is not an llmkit metadata store, or one from another version."""


@dataclass(kw_only=True)
class StoredChunk(Chunk):
    """A chunk as stored: `id` is its vector id in the index."""

    id: int


@dataclass
class DocumentRecord:
    doc_id: str
    file_name: str
    path: str
    pages_total: int
    pages_needing_ocr: list[int]
    added_at: str
    n_chunks: int
    metadata: dict = field(default_factory=dict)  # a text item's, as given to Collection.add_texts


class MetadataStore:
    def __init__(self, path: str | Path):
        """Open the store at `path`, creating it when the file does not exist (or is empty).

        Two processes may create or migrate one store at once: each step happens in a write transaction that
        first checks it is still needed, so the second finds it done.
        """
        self.path = Path(path)
        # Autocommit mode: every transaction is an explicit BEGIN ... COMMIT (see `_transaction`, `snapshot`).
        # Any thread may use the store (a web app's workers do), but one at a time: the caller serialises.
        # timeout: how long a statement waits for another process's write transaction (a busy 2-core machine
        # has been seen to need more than sqlite3's default 5 s while two processes created one store).
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_SECONDS)
        try:
            set_wal(self._db, self.path, BUSY_SECONDS)
            # FULL, not WAL's usual NORMAL: the collection saves the index right after a commit and relies on
            # that commit surviving a power cut (see rag.collection).
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            if self._is_empty():
                with self._transaction():
                    if self._is_empty():
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                self._db.execute(statement)
                        self._db.executemany("INSERT INTO meta VALUES (?, ?)",
                                             [("format", FORMAT), ("version", str(FORMAT_VERSION))])
            self._check_format()
        except BaseException:
            self._db.close()
            raise

    def _is_empty(self) -> bool:
        return self._db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0

    def _version(self) -> str | None:
        """The format version, after checking the format name."""
        try:
            meta = dict(self._db.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as e:  # no meta table, or not an SQLite file at all
            raise StoreFormatError(f"{self.path} is not an llmkit metadata store ({e})") from e
        if meta.get("format") != FORMAT:
            raise StoreFormatError(f"{self.path} is not an llmkit metadata store (format {meta.get('format')!r})")
        return meta.get("version")

    def _check_format(self) -> None:
        version = self._version()
        if version in {str(v) for v in _MIGRATIONS}:
            with self._transaction() as db:
                version = self._version()  # another process may have migrated it meanwhile
                if version in {str(v) for v in _MIGRATIONS}:
                    for step in range(int(version), FORMAT_VERSION):
                        _MIGRATIONS[step](db)
                    db.execute("UPDATE meta SET value = ? WHERE key = 'version'", (str(FORMAT_VERSION),))
                    version = str(FORMAT_VERSION)
        if version != str(FORMAT_VERSION):
            raise StoreFormatError(f"{self.path} has store format version {version!r}; this llmkit reads "
                                   f"version {FORMAT_VERSION}: upgrade llmkit, or re-create the collection")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see the store as of one moment, whatever other connections commit meanwhile.

        One read transaction: under WAL it blocks no writer. Nested calls share the outer snapshot.
        """
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN")
        try:
            self._db.execute("SELECT 1 FROM meta LIMIT 1").fetchone()  # BEGIN is deferred: the first read starts it
            yield
        finally:
            self._db.execute("COMMIT")

    @property
    def in_snapshot(self) -> bool:
        return self._db.in_transaction

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        assert not self._db.in_transaction, "a write inside a snapshot() or another transaction"
        with immediate_transaction(self._db) as db:
            yield db

    # --- writes ---------------------------------------------------------------------------------------------------

    def add_document(self, report: LoadReport, chunks: list[Chunk], state: str = "ready") -> list[int]:
        """Insert one document and its chunks in one transaction; returns the new chunk ids, in `chunks` order."""
        return self.add_documents([(report, chunks)], state)[0]

    def add_documents(self, documents: Iterable[tuple[LoadReport, list[Chunk]]],
                      state: str = "ready") -> list[list[int]]:
        """Several documents in one transaction; a document already present (in any state) raises ValueError."""
        assert state in STATES, state
        added_at = datetime.now(UTC).isoformat(timespec="seconds")
        all_ids = []
        with self._transaction() as db:
            for report, chunks in documents:
                assert report.ok and report.content_hash, "only loaded files are stored"
                assert all(chunk.doc_id == report.content_hash for chunk in chunks), "chunks of another document"
                try:
                    db.execute("INSERT INTO documents (doc_id, file_name, path, pages_total, pages_needing_ocr, "
                               "added_at, state, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (report.content_hash, report.name, report.path, report.pages_total,
                                json.dumps(report.pages_needing_ocr), added_at, state, json.dumps(report.metadata)))
                except sqlite3.IntegrityError as e:
                    raise ValueError(f"document {report.content_hash} ({report.name}) is already stored") from e
                ids = []
                for chunk in chunks:
                    cursor = db.execute('INSERT INTO chunks (doc_id, page, start, "end", text, locator, context) '
                                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                        (chunk.doc_id, chunk.page, chunk.start, chunk.end, chunk.text, chunk.locator,
                                         chunk.context))
                    ids.append(cursor.lastrowid)
                all_ids.append(ids)
        return all_ids

    def set_state(self, doc_ids: Iterable[str], state: str) -> None:
        assert state in STATES, state
        with self._transaction() as db:
            db.executemany("UPDATE documents SET state = ? WHERE doc_id = ?", [(state, d) for d in doc_ids])

    def remove_document(self, doc_id: str) -> list[int]:
        """Delete a document (in any state) and its chunks; returns the chunk ids removed ([] if it was absent)."""
        with self._transaction() as db:
            ids = [row[0] for row in db.execute("SELECT id FROM chunks WHERE doc_id = ? ORDER BY id", (doc_id,))]
            db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))  # chunks go by ON DELETE CASCADE
        return ids

    # --- reads ----------------------------------------------------------------------------------------------------

    def has_document(self, doc_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM documents WHERE doc_id = ? AND state = 'ready'",
                                (doc_id,)).fetchone() is not None

    def documents(self, state: str = "ready") -> list[DocumentRecord]:
        """Documents in `state`, oldest first."""
        rows = self._db.execute(
            "SELECT d.doc_id, d.file_name, d.path, d.pages_total, d.pages_needing_ocr, d.added_at, "
            "(SELECT COUNT(*) FROM chunks c WHERE c.doc_id = d.doc_id), d.metadata "
            "FROM documents d WHERE d.state = ? ORDER BY d.added_at, d.rowid", (state,))
        return [DocumentRecord(d, name, path, total, json.loads(ocr), added, n, json.loads(metadata))
                for d, name, path, total, ocr, added, n, metadata in rows]

    def chunk_ids(self, doc_id: str) -> list[int]:
        return [row[0] for row in self._db.execute("SELECT id FROM chunks WHERE doc_id = ? ORDER BY id", (doc_id,))]

    def chunks_by_ids(self, ids: Iterable[int]) -> list[StoredChunk]:
        """The chunks with these ids, in the order asked (documents in any state); KeyError names missing ids."""
        ids = [int(i) for i in ids]
        found = {}
        for start in range(0, len(ids), 500):  # stay under SQLite's limit on bound parameters
            batch = ids[start: start + 500]
            rows = self._db.execute(f"SELECT {_CHUNK_COLUMNS} FROM chunks c JOIN documents d USING (doc_id) "
                                    f"WHERE c.id IN ({','.join('?' * len(batch))})", batch)
            found.update((row[0], _stored_chunk(row)) for row in rows)
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"no chunk with id(s) {missing[:10]} in {self.path}")
        return [found[i] for i in ids]

    def all_chunks(self) -> Iterator[StoredChunk]:
        """Every chunk of every ready document, by id."""
        rows = self._db.execute(f"SELECT {_CHUNK_COLUMNS} FROM chunks c JOIN documents d USING (doc_id) "
                                "WHERE d.state = 'ready' ORDER BY c.id")
        return (_stored_chunk(row) for row in rows)

    def count_chunks(self, state: str = "ready") -> int:
        return self._db.execute("SELECT COUNT(*) FROM chunks c JOIN documents d USING (doc_id) WHERE d.state = ?",
                                (state,)).fetchone()[0]

    def generation(self) -> tuple[tuple[str, ...], int]:
        """Changes whenever the searchable chunks do: the ready documents and the last chunk id handed out.

        Ids are never reused (AUTOINCREMENT), so removing a document and adding it back changes it too.
        """
        ready = self._db.execute("SELECT doc_id FROM documents WHERE state = 'ready' ORDER BY rowid")
        docs = tuple(row[0] for row in ready)
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunks'").fetchone()
        return docs, row[0] if row else 0

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def close(self) -> None:
        self._db.close()


def _stored_chunk(row: tuple) -> StoredChunk:
    chunk_id, doc_id, file_name, page, start, end, text, locator, context = row
    return StoredChunk(doc_id=doc_id, file_name=file_name, page=page, start=start, end=end, text=text,
                       locator=locator, context=context, id=chunk_id)
