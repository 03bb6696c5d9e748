"""A named, persistent collection of documents: the metadata store and the vector index in one directory.

`<data dir>/collections/<name>/` holds `store.sqlite` (documents, chunk texts: `rag.store`) and `index/`
(vectors by chunk id: `rag.index`). The data dir is the `data_dir` argument, else `core.settings.data_dir()`
(env LLMKIT_HOME, else the user's data dir: `~/.local/share/llmkit` on Linux).

The store's meta table records which embedder (model and precision) made the vectors; opening the
collection with another re-embeds every chunk, with a warning, so queries and chunks are never compared
across models.

Crash consistency. The store is the source of truth; the index is kept so that, on disk, its ids are
always a subset of the store's chunk ids, and every *ready* chunk has its vector. Document states in the
store act as a write-ahead record:
- add:    1. commit the documents and chunks as "pending" (this allocates the chunk ids)
          2. add the vectors, save the index (atomically)   3. commit the documents as "ready"
- remove: 1. commit the documents as "removing"   2. remove the vectors, save the index   3. delete the rows
A crash anywhere leaves some documents "pending" or "removing". Opening the collection (and every write)
first rolls them off: remove their ids from the index (`remove` ignores ids it does not hold), save it,
delete their rows. So an interrupted add is undone and an interrupted remove is finished; nothing is
re-embedded. Search sees ready documents only (but see below). As a last resort, if the index is missing,
unreadable or its size disagrees with the store's ready chunks (deleted or damaged by hand), it is rebuilt
by re-embedding every chunk text from the store, with a warning.

Several processes (the PDF app and the CLI share the default data dir) may use one collection at once.
- Writers take the collection's write lock, an exclusive `flock` on `write.lock` in its directory, for the
  steps above (and rebuilds): not while files are read and embedded, so a second writer waits for seconds,
  not minutes. It waits up to LOCK_TIMEOUT, then raises CollectionBusyError naming the collection. Holding
  the lock, a writer first reloads the index if another process saved one since it loaded its own (or its
  save would drop the other's vectors), then rolls off what a crash left: while it holds the lock, no other
  writer can be half-way, so recovery never undoes a live process's add.
- Readers never take the lock. `reading()` (`Retriever.search` reads inside it) sees one snapshot of the store
  (SQLite WAL) and the index saved with it, reloading the index when another process saved one. A search
  running during another process's write may return chunks of a document being added (after step 2) or
  removed (before step 2): it never fails for them.
- Opening takes the lock only if it is free. While another process writes, open loads what it saved and
  leaves recovery and the checks to the next open; only an open that must re-embed (another embedder) waits.
The lock is POSIX `fcntl.flock`: the data dir must be on a local file system (NFS may not honour it).

Each collection keeps its passage size (`chunk_tokens`, in the store's meta table; default
`rag.chunking.CHUNK_TOKENS`): every add and re-index chunks at it, so changing it and re-indexing a document
(`replace`, which reads, chunks and embeds the file again even when its content is unchanged) changes its chunks.
`delete_collection` removes a whole collection, under its write lock.

Kept PDFs. Each PDF document's file is kept as `pdfs/<doc id>.pdf` in the collection's directory, so that its
pages can be shown (`rag.pages`, `source_file`) when the file it was added from is gone (a web upload's temp
file): copied under the write lock before step 1 of the add, checked against the document's content hash, and
renamed into place (atomic); hard-linked instead when the file is already inside the collection directory (the
PDF app keeps its uploads there), so those take no second copy on disk. Otherwise a collection of PDFs takes
their size again on disk, up to `rag.loaders.MAX_FILE_BYTES` each. Every write and open deletes the kept files
of documents no longer in the store (a crash between the copy and the commit, or a remove), after the rows.
An encrypted PDF is kept encrypted; its password is not kept. A document without its kept file (added before
files were kept, or whose file changed while it was read) still has its text, and `source_file` falls back to
the path it was added from while that holds the same bytes.

Files (`add_files`) and text items (`add_texts`: an email body, a news item, a source file) take one path
into the collection: each is loaded into pages and a `LoadReport`, then chunked, embedded and stored by
`_ingest`, with the same dedup, crash consistency and reports.

Does not: do OCR, or search: `rag.retriever.Retriever` reads a collection (dense, BM25 or both). Errors of
the environment (a full disk while saving) propagate; bad input files and items are reported in their
`LoadReport` and the batch goes on.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Literal

import numpy as np

from core import settings
from rag.chunking import CHUNK_TOKENS, OVERLAP_TOKENS, Chunk, chunk_pages, make_splitter
from rag.context import indexed_text
from rag.embeddings import Embedder
from rag.index import IndexFormatError, VectorIndex, load_index, make_index, saved_version
from rag.loaders import MAX_FILE_BYTES, LoadReport, Page, TextItem, load_file, load_files, load_text
from rag.store import DocumentRecord, MetadataStore

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
ALREADY_PRESENT = "already in the collection"
EMBEDDER_KEY = "embedder"  # in the store's meta table: which embedder (model, precision) made the vectors
CHUNK_TOKENS_KEY = "chunk_tokens"  # in the store's meta table: the collection's passage size, when not the default
CONTEXTUAL_KEY = "contextual"  # in the store's meta table: "0" when chunks are indexed without their context
CHUNK_TOKENS_RANGE = (64, 240)  # passage sizes a collection may set: below, passages lose their context; above,
# they near all-MiniLM-L6-v2's 256-token window
DELETING = ".deleting-"  # a collection being deleted is renamed to this prefix + name + a random suffix
MIN_ID_PREFIX = 4  # the shortest start of a document id that `find` takes for the id (as git does)
LOCK_FILE = "write.lock"
PDF_DIR = "pdfs"  # the kept PDFs, `<doc id>.pdf`
DOC_ID = re.compile(r"[0-9a-f]{64}")  # a document id: the sha256 hex of its content
LOCK_TIMEOUT = 60.0  # seconds a write waits for another process's write to end (its commit: embedding is unlocked)
_LOCK_POLL = 0.05  # seconds between tries for the lock
_NOT_LOADED = object()  # `Collection._saved` before any index is loaded: equal to no saved_version()

Progress = Callable[[str, float, int], None]  # (stage "load" | "ocr" | "embed", done, total); "load" counts files
# (or items), in fractions as a PDF's pages are read; "ocr" counts one file's pages read by OCR


def collection_names(data_dir: str | Path | None = None) -> list[str]:
    """The collections under the data dir, sorted."""
    root = Path(data_dir or settings.data_dir()) / "collections"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if NAME_PATTERN.fullmatch(p.name) and (p / "store.sqlite").exists())


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"invalid collection name {name!r}: use 1 to 64 letters, digits, '-' or '_'")
    return name


def check_chunk_tokens(tokens: int, embedder: Embedder | None = None) -> int:
    """`tokens` if it is a passage size a collection may set (CHUNK_TOKENS_RANGE, and within the embedder's window
    with its special tokens), else ValueError saying the range."""
    low, high = CHUNK_TOKENS_RANGE
    if embedder is not None:
        high = min(high, embedder.max_tokens - 2)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not low <= tokens <= high:
        raise ValueError(f"the passage size must be a whole number of tokens from {low} to {high}, not {tokens!r}")
    return tokens


def delete_collection(name: str, data_dir: str | Path | None = None, timeout: float = 0.0) -> None:
    """Delete the collection `name`, its documents, vectors and files, holding its write lock so that another
    process's write is never cut short: CollectionBusyError when one holds the lock for longer than `timeout`
    seconds; FileNotFoundError when there is no such collection.

    The directory is renamed out of the way first (atomic), then removed, so a crash half-way leaves no half
    collection (`collection_names` skips the renamed one; the next delete removes it). A process that has the
    collection open meanwhile gets CollectionDeletedError at its next write, or read of a newer index.
    """
    root = Path(data_dir or settings.data_dir()) / "collections"
    directory = root / check_name(name)
    if not (directory / "store.sqlite").exists():
        raise FileNotFoundError(f"there is no collection {name!r}")
    lock = _WriteLock(directory / LOCK_FILE, name)
    try:
        lock.acquire(timeout)
        try:
            directory.rename(root / f"{DELETING}{name}-{uuid.uuid4().hex[:8]}")
        finally:
            lock.release()
    finally:
        lock.close()
    for leftover in root.glob(f"{DELETING}*"):  # this one, and any a crash left
        shutil.rmtree(leftover, ignore_errors=True)


class CollectionBusyError(TimeoutError):
    """Another process held the collection's write lock for longer than this write would wait."""


class CollectionDeletedError(RuntimeError):
    """The collection was deleted (`delete_collection`) while this object had it open: nothing can be written."""


class _WriteLock:
    """An exclusive `flock` on the collection's lock file, counted so that a write may nest another (replace
    removes and adds under one hold). The holder writes its pid into the file for the message of whoever waits.
    flock belongs to an open file, so two Collection objects in one process exclude each other too."""

    def __init__(self, path: Path, name: str):
        self.path, self.name, self.depth = path, name, 0
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def acquire(self, timeout: float) -> None:
        if self.depth == 0:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise CollectionBusyError(self._busy(timeout)) from None
                    time.sleep(_LOCK_POLL)
            if not self._still_there():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                raise CollectionDeletedError(f"collection {self.name!r} was deleted while it was open here; open "
                                             "it again to make a new one")
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        self.depth += 1

    def _still_there(self) -> bool:
        """Whether the lock file is still the collection's (`delete_collection` moves the directory, then removes
        it, under the lock)."""
        try:
            there = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(self._fd)
        return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        self.depth -= 1
        if self.depth == 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _busy(self, timeout: float) -> str:
        holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip()
        who = f"another process (pid {holder})" if holder.isdigit() else "another process"
        return (f"collection {self.name!r} is being changed by {who}, which still held its write lock after "
                f"{timeout:g} s: try again when that write is done")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Collection:
    """Use `Collection.open(name)`; close it (or use `with`) when done. One thread at a time uses an object (the
    caller serialises); other processes may use the collection meanwhile (see the module doc)."""

    def __init__(self, name: str, directory: Path, embedder: Embedder, store: MetadataStore, index: VectorIndex):
        self.name, self.directory, self.embedder, self.store, self.index = name, directory, embedder, store, index
        self._lock = _WriteLock(directory / LOCK_FILE, name)
        self._saved = saved_version(self.index_dir)  # the save `index` is; compared before every read and write

    @classmethod
    def open(cls, name: str, data_dir: str | Path | None = None, embedder: Embedder | None = None,
             index_kind: str = "faiss") -> Collection:
        """Open the collection `name`, creating it if missing; finishes any write a crash interrupted.

        While another process writes the collection, it opens at once, on what that process saved, and leaves
        the crash checks to a later open; only when it must re-embed (`embedder` is not the one the vectors
        were made with) does it wait for the write lock, up to LOCK_TIMEOUT (CollectionBusyError).
        """
        check_name(name)
        directory = Path(data_dir or settings.data_dir()) / "collections" / name
        directory.mkdir(parents=True, exist_ok=True)
        if embedder is None:
            from rag.embeddings import SentenceTransformerEmbedder  # loads a model: only when none is given

            embedder = SentenceTransformerEmbedder()
        store = MetadataStore(directory / "store.sqlite")
        try:
            collection = cls(name, directory, embedder, store, make_index(embedder.dim, index_kind))
        except BaseException:
            store.close()
            raise
        try:
            collection._saved = _NOT_LOADED  # the index above is a placeholder: the first read or write loads one
            same_embedder = store.get_meta(EMBEDDER_KEY) in (None, _identity(embedder))
            try:
                with collection._writing(timeout=0 if same_embedder else None):
                    collection._check_on_open()
            except CollectionBusyError:
                if not same_embedder:
                    raise
                with collection.reading():  # loads what the writing process saved
                    pass
        except BaseException:
            collection.close()
            raise
        return collection

    def _check_on_open(self) -> None:
        """The last-resort checks (module doc), under the lock, after `_writing` loaded the index and recovered."""
        identity, built_by = _identity(self.embedder), self.store.get_meta(EMBEDDER_KEY)
        if len(self.index) != self.store.count_chunks():
            warnings.warn(f"collection {self.name!r}: the index holds {len(self.index)} vectors but the store "
                          f"{self.store.count_chunks()} chunks; rebuilding the index from the store", stacklevel=3)
            self._rebuild_index()
        elif built_by is not None and built_by != identity and len(self.index):
            warnings.warn(f"collection {self.name!r} was embedded with {built_by}, not {identity}: re-embedding its "
                          f"{len(self.index)} chunks", stacklevel=3)
            self._rebuild_index()
        if built_by != identity:
            self.store.set_meta(EMBEDDER_KEY, identity)

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()
        self._lock.close()

    @property
    def index_dir(self) -> Path:
        return self.directory / "index"

    @property
    def chunk_tokens(self) -> int:
        """The passage size (in the embedder's tokens) adds and re-indexes chunk at; kept with the collection."""
        stored = self.store.get_meta(CHUNK_TOKENS_KEY)
        return int(stored) if stored else CHUNK_TOKENS

    def set_chunk_tokens(self, tokens: int) -> None:
        """Chunk later adds and re-indexes at `tokens` (ValueError outside `check_chunk_tokens`'s range); documents
        already in the collection keep their chunks until re-indexed (`replace`)."""
        check_chunk_tokens(tokens, self.embedder)
        with self._writing():
            self.store.set_meta(CHUNK_TOKENS_KEY, str(tokens))

    @property
    def contextual(self) -> bool:
        """Whether adds index each chunk with its context (rag.context), as they do unless turned off."""
        return self.store.get_meta(CONTEXTUAL_KEY) != "0"

    def set_contextual(self, contextual: bool) -> None:
        """Index later adds and re-indexes with (True) or without their chunks' context: measured in rag.evaluate
        (--no-context); documents already in the collection keep theirs until re-indexed (`replace`)."""
        with self._writing():
            self.store.set_meta(CONTEXTUAL_KEY, "1" if contextual else "0")

    # --- writes ---------------------------------------------------------------------------------------------------

    def add_files(self, paths: Iterable[str | Path], password: str | None = None,
                  progress: Progress | None = None, ocr: Literal["auto", "off"] = "auto") -> list[LoadReport]:
        """Load, chunk, embed and index a batch; one report per path, in order.

        A file that fails to load gets `report.error` and the batch goes on. A file whose bytes are already in
        the collection (under any name) is skipped with the warning "already in the collection". `ocr` is
        `rag.loaders.load_file`'s: "auto" reads PDF pages without a text layer by OCR.
        """
        paths = list(paths)
        on_load = (lambda done, total, _name: progress("load", done, total)) if progress else None
        on_ocr = (lambda done, total, _name: progress("ocr", done, total)) if progress else None
        loaded = load_files(paths, password, on_load, ocr, on_ocr)
        self._ingest(loaded, progress)
        return [report for _, report in loaded]

    def add_texts(self, items: Iterable[TextItem], progress: Progress | None = None) -> list[LoadReport]:
        """Chunk, embed and index a batch of text items; one report per item, in order, as `add_files` gives.

        An item that is empty, longer than `rag.loaders.MAX_TEXT_CHARS` or has a name or locator a citation
        cannot print gets `report.error` and the batch goes on; one already in the collection (same text and
        locator) is skipped with the warning "already in the collection".
        """
        items = list(items)
        loaded = []
        for done, item in enumerate(items, start=1):
            loaded.append(load_text(item))
            if progress:
                progress("load", done, len(items))
        self._ingest(loaded, progress)
        return [report for _, report in loaded]

    def remove(self, name_or_id: str) -> int:
        """Delete the document `find(name_or_id)` names, or every document with this file name when several
        share it, vectors included. Returns how many documents were removed (0 when nothing matched)."""
        with self._writing():
            matches = self._matches(name_or_id)
            if len(matches) > 1 and matches[0].file_name != name_or_id:
                raise ValueError(_ambiguity(name_or_id, matches))
            if matches:
                self.store.set_state([d.doc_id for d in matches], "removing")
                self._recover()
        return len(matches)

    def replace(self, path: str | Path, password: str | None = None, progress: Progress | None = None) -> LoadReport:
        """Swap the document(s) named like `path` for the file's current content: read, chunked (at `chunk_tokens`)
        and embedded again, also when the content is unchanged (a re-index after a passage size or loader change).

        The new file is loaded and embedded first: if it fails, the old document stays. The remove and the
        add are two steps, so a crash between them leaves neither version. Content that is in the collection
        under another name is not added again (the warning "already in the collection"), and nothing is removed.
        """
        on_page = (lambda read, pages: progress("load", read / pages, 1)) if progress else None
        on_ocr = (lambda done, total: progress("ocr", done, total)) if progress else None
        pages, report = load_file(path, password, on_page, on_ocr=on_ocr)
        if progress:
            progress("load", 1, 1)
        same = report.ok and any(d.file_name == report.name for d in self._matches(report.content_hash))
        batch = self._prepare([(pages, report)], progress, again={report.content_hash} if same else set())
        with self._writing():
            if batch:  # loaded, and not already in the collection
                self.remove(report.name)
            self._commit(batch)
        return report

    def _ingest(self, loaded: list[tuple[list[Page], LoadReport]], progress: Progress | None) -> None:
        batch = self._prepare(loaded, progress)
        with self._writing():
            self._commit(batch)

    def _prepare(self, loaded: list[tuple[list[Page], LoadReport]], progress: Progress | None,
                 again: set[str] = frozenset()) -> list[tuple[LoadReport, list[Chunk], np.ndarray]]:
        """(report, chunks, their vectors (n, dim)) of each loaded document not in the collection (unless its
        content hash is in `again`: a re-index) nor earlier in `loaded`. Outside the lock: the slow part of an add."""
        tokens, contextual = self.chunk_tokens, self.contextual
        splitter = make_splitter(self.embedder.count_tokens, tokens, tokens * OVERLAP_TOKENS // CHUNK_TOKENS)
        new, seen = [], set()
        for pages, report in loaded:
            if not report.ok:
                continue
            present = self.store.has_document(report.content_hash) and report.content_hash not in again
            if report.content_hash in seen or present:
                report.warnings.append(f"{ALREADY_PRESENT} (same content): not added again")
                continue
            seen.add(report.content_hash)
            new.append((report, chunk_pages(pages, report.content_hash, report.name, splitter, contextual)))
        if not new:
            return []
        texts = [indexed_text(chunk.context, chunk.text) for _, chunks in new for chunk in chunks]
        on_embed = (lambda done, total: progress("embed", done, total)) if progress else None
        vectors = self.embedder.embed(texts, on_embed)  # (n_chunks, dim)
        ends = np.cumsum([len(chunks) for _, chunks in new])[:-1]
        return [(report, chunks, part) for (report, chunks), part in zip(new, np.split(vectors, ends), strict=True)]

    def _commit(self, batch: list[tuple[LoadReport, list[Chunk], np.ndarray]]) -> None:
        """Steps 1 to 3 of an add (module doc), under the lock; a document another process added since it was
        embedded is skipped."""
        assert self._lock.depth, "a write without the lock"
        names = {d.file_name for d in self.store.documents()}
        new = []
        for report, chunks, vectors in batch:
            if self.store.has_document(report.content_hash):
                report.warnings.append(f"{ALREADY_PRESENT} (same content): not added again")
                continue
            if report.name in names:
                report.warnings.append(f"another document named {report.name!r} is in the collection; both are "
                                       "kept (use replace() to update a file, or remove the old one)")
            new.append((report, chunks, vectors))
        if not new:
            return
        for report, *_ in new:
            if report.kind == "pdf":
                self._keep_pdf(report)
        ids = self.store.add_documents([(report, chunks) for report, chunks, _ in new], state="pending")  # step 1
        flat_ids = np.array([i for doc_ids in ids for i in doc_ids], np.int64)
        vectors = np.concatenate([vectors for *_, vectors in new])  # (n_chunks, dim)
        assert len(flat_ids) == len(vectors), (len(flat_ids), vectors.shape)
        self.index.add(flat_ids, vectors)
        try:
            self._save()  # step 2
        except BaseException:
            # Keep memory like the disk; the pending rows are rolled off by the next write or open.
            self.index.remove(flat_ids)
            raise
        self.store.set_state([report.content_hash for report, *_ in new], "ready")  # step 3

    def _keep_pdf(self, report: LoadReport) -> None:
        """Keep the PDF `report` read as `pdfs/<doc id>.pdf` (module doc); under the lock. A file that no longer
        holds the bytes that were read, or cannot be copied, is not kept (a warning): its pages show as text."""
        target = self.directory / PDF_DIR / f"{report.content_hash}.pdf"
        if target.is_file():
            return
        source, part = Path(report.path), target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            if source.stat().st_size > MAX_FILE_BYTES:  # grown since it was read
                raise OSError(f"over {MAX_FILE_BYTES} bytes")
            target.parent.mkdir(exist_ok=True)
            if self.directory.resolve() in source.resolve().parents:
                os.link(source, part)  # the PDF app's own copy of an upload: no second copy on disk
                digest = _sha256(part)
            else:
                digest = _sha256(source, copy_to=part)
            if digest != report.content_hash:
                warnings.warn(f"{source} changed while it was added: its pages will show as text", stacklevel=2)
                return
            os.replace(part, target)
        except OSError as e:
            warnings.warn(f"could not keep a copy of {source} ({e}): its pages will show as text", stacklevel=2)
        finally:
            part.unlink(missing_ok=True)

    def _recover(self) -> None:
        """Roll off documents left "pending" (undo the add) or "removing" (finish the remove), then delete kept PDFs
        of documents no longer in the store. Under the lock only: then they are a crashed writer's, or this write's
        own remove, never a live process's add."""
        assert self._lock.depth, "recovery without the lock"
        stale = self.store.documents("pending") + self.store.documents("removing")
        if stale:
            ids = [i for d in stale for i in self.store.chunk_ids(d.doc_id)]
            self.index.remove(np.array(ids, np.int64))
            self._save()  # always: an earlier failed save may have left these vectors on disk
            for d in stale:
                self.store.remove_document(d.doc_id)
        kept = self.directory / PDF_DIR
        if kept.is_dir():
            wanted = {f"{d.doc_id}.pdf" for d in self.store.documents()}
            for path in kept.iterdir():
                if path.name not in wanted:
                    path.unlink(missing_ok=True)

    def _save(self) -> None:
        self.index.save(self.index_dir)
        self._saved = saved_version(self.index_dir)

    def _rebuild_index(self) -> None:
        self.index = _rebuild(self.index_dir, self.embedder, self.store, self.index.kind)
        self._saved = saved_version(self.index_dir)

    @contextmanager
    def _writing(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the write lock (waiting up to `timeout`, default LOCK_TIMEOUT). On taking it, the index is reloaded
        if another process saved one since, and what a crashed writer left is rolled off."""
        self._lock.acquire(LOCK_TIMEOUT if timeout is None else timeout)
        try:
            if self._lock.depth == 1:
                if saved_version(self.index_dir) != self._saved:
                    self.index = _open_index(self.index_dir, self.embedder, self.store, self.index.kind)
                    self._saved = saved_version(self.index_dir)
                self._recover()
            yield
        finally:
            self._lock.release()

    # --- reads ----------------------------------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[Collection]:
        """Reads inside see one state of the collection while other processes write it: the store as of one
        snapshot, and `index` as saved with it (reloaded first when another process saved one since).

        Why they agree: the index on disk, unchanged since this process loaded it, was checked after the snapshot
        began; writers commit chunk rows before they save an index holding them, and save an index without
        them before deleting the rows, so every id it holds is in the snapshot. Nested calls share the outer one.
        """
        if self._lock.depth or self.store.in_snapshot:  # this process is writing, or already reading
            yield self
            return
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            with self.store.snapshot():
                if saved_version(self.index_dir) == self._saved:
                    yield self
                    return
            if time.monotonic() > deadline:
                raise CollectionBusyError(f"collection {self.name!r}: another process saved its index again each "
                                          f"time this one loaded it, for {LOCK_TIMEOUT:g} s; try again")
            self._load_saved()

    def _load_saved(self) -> None:
        """Load the index another process saved, for reading; after a load that raced a save, `_saved` is left as
        it was and the caller tries again."""
        before = saved_version(self.index_dir)
        if before is None and self.store.count_chunks() == 0:
            index = make_index(self.embedder.dim, self.index.kind)  # nothing saved yet (or nothing to save)
        else:
            try:
                index = load_index(self.index_dir)
            except (FileNotFoundError, IndexFormatError):
                if saved_version(self.index_dir) == before:  # damaged, not replaced by a save meanwhile
                    with self._writing():  # taking the lock reloads the index, rebuilding it, as open does
                        pass
                return
            _check_dim(index, self.index_dir, self.embedder)
            built_by = self.store.get_meta(EMBEDDER_KEY)
            if built_by not in (None, _identity(self.embedder)):
                raise ValueError(f"collection {self.name!r} was re-embedded with {built_by} by another process: its "
                                 f"vectors no longer match {_identity(self.embedder)}'s; open it with that embedder")
        if saved_version(self.index_dir) == before:
            self.index, self._saved = index, before

    # --- reads ----------------------------------------------------------------------------------------------------

    def documents(self) -> list[DocumentRecord]:
        return self.store.documents()

    def find(self, name_or_id: str) -> DocumentRecord | None:
        """The document with this id, else with this file name, else whose id starts with `name_or_id` (of at
        least MIN_ID_PREFIX characters; `llmkit index list` shows 12); None when none matches.

        Raises ValueError, naming the candidates, when several documents share the name or the id prefix.
        """
        matches = self._matches(name_or_id)
        if len(matches) > 1:
            raise ValueError(_ambiguity(name_or_id, matches))
        return matches[0] if matches else None

    def _matches(self, name_or_id: str) -> list[DocumentRecord]:
        documents = self.store.documents()
        exact = [d for d in documents if d.doc_id == name_or_id] or [d for d in documents if d.file_name == name_or_id]
        if exact or len(name_or_id) < MIN_ID_PREFIX:
            return exact
        return [d for d in documents if d.doc_id.startswith(name_or_id.lower())]

    def source_file(self, doc_id: str) -> Path | None:
        """The PDF document `doc_id` was read from: its kept copy (module doc), else the path it was added from if
        that still holds the same bytes (a document added before copies were kept); None for a document that is
        not a PDF, or whose file is gone or changed. The file may need the password the document was added with."""
        if not DOC_ID.fullmatch(doc_id):
            return None
        kept = self.directory / PDF_DIR / f"{doc_id}.pdf"
        if kept.is_file():
            return kept
        record = next((d for d in self.store.documents() if d.doc_id == doc_id), None)
        if record is None or not record.file_name.lower().endswith(".pdf"):
            return None
        path = Path(record.path)
        try:
            same = path.is_file() and path.stat().st_size <= MAX_FILE_BYTES and _sha256(path) == doc_id
        except OSError:
            return None
        return path if same else None

    def page_text(self, doc_id: str, page: int) -> str:
        """Page `page` (1-based) of a document as indexed: its chunks joined where they overlap.

        The store keeps chunks, not pages, so whitespace the splitter dropped between chunks comes back
        as one newline; "" for a page without text.
        """
        with self.store.snapshot():  # a remove in another process between the two reads would lose the ids
            chunks = [c for c in self.store.chunks_by_ids(self.store.chunk_ids(doc_id)) if c.page == page]
        text, end = "", 0
        for chunk in sorted(chunks, key=lambda c: (c.start, c.end)):
            if chunk.end <= end:
                continue
            if chunk.start > end and text:
                text += "\n"
            text += chunk.text[max(0, end - chunk.start):]
            end = chunk.end
        return text

    def __len__(self) -> int:
        """The number of chunks (= vectors) searchable."""
        with self.reading():
            return len(self.index)


def _sha256(path: Path, copy_to: Path | None = None) -> str:
    """The sha256 hex of the file's bytes (a document's id), read in blocks; also written to `copy_to` if given."""
    digest = hashlib.sha256()
    with path.open("rb") as source, (copy_to.open("xb") if copy_to else nullcontext()) as out:
        while block := source.read(1 << 20):
            digest.update(block)
            if out is not None:
                out.write(block)
    return digest.hexdigest()


def _ambiguity(name_or_id: str, matches: list[DocumentRecord]) -> str:
    if matches[0].file_name == name_or_id:
        what, fix = "documents are named", "give the id"
    else:
        what, fix = "document ids start with", "give more of the id"
    listed = ", ".join(f"{d.file_name} (id {d.doc_id[:12]})" for d in matches[:5])
    return f"{len(matches)} {what} {name_or_id!r}: {listed}; {fix} to choose one"


def _open_index(directory: Path, embedder: Embedder, store: MetadataStore, kind: str) -> VectorIndex:
    try:
        index = load_index(directory)
    except FileNotFoundError:
        if store.count_chunks() == 0 and not store.documents("pending") and not store.documents("removing"):
            return make_index(embedder.dim, kind)  # a new collection (or an empty one never saved)
        warnings.warn(f"{directory}: the index is missing; rebuilding it from the store", stacklevel=3)
        return _rebuild(directory, embedder, store, kind)
    except IndexFormatError as e:
        warnings.warn(f"{e}; rebuilding the index from the store", stacklevel=3)
        return _rebuild(directory, embedder, store, kind)
    _check_dim(index, directory, embedder)
    return index


def _check_dim(index: VectorIndex, directory: Path, embedder: Embedder) -> None:
    if index.dim != embedder.dim:
        raise ValueError(f"{directory} holds {index.dim}-d vectors but the embedder makes {embedder.dim}-d ones: "
                         "open the collection with the embedding model that built it")


def _identity(embedder: Embedder) -> str:
    return getattr(embedder, "identity", type(embedder).__name__)


def _rebuild(directory: Path, embedder: Embedder, store: MetadataStore, kind: str) -> VectorIndex:
    """A fresh index from every ready chunk's text, saved; then pending and removing documents are dropped (after
    the save, so the index on disk never holds a chunk the store lacks)."""
    chunks = list(store.all_chunks())
    index = make_index(embedder.dim, kind)
    if chunks:
        index.add(np.array([c.id for c in chunks], np.int64), embedder.embed([indexed_text(c.context, c.text)
                                                                              for c in chunks]))
    index.save(directory)
    for state in ("pending", "removing"):
        for d in store.documents(state):
            store.remove_document(d.doc_id)
    return index
