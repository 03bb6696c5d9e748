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
re-embedded. Search sees ready documents only. As a last resort, if the index is missing, unreadable or
its size disagrees with the store's ready chunks (deleted or damaged by hand), it is rebuilt by
re-embedding every chunk text from the store, with a warning.

Files (`add_files`) and text items (`add_texts`: an email body, a news item, a source file) take one path
into the collection: each is loaded into pages and a `LoadReport`, then chunked, embedded and stored by
`_ingest`, with the same dedup, crash consistency and reports.

Does not: lock (one process writes a collection at a time), do OCR, or search: `rag.retriever.Retriever`
reads a collection (dense, BM25 or both). Errors of the environment (a full disk while saving) propagate; bad
input files and items are reported in their `LoadReport` and the batch goes on.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from core import settings
from rag.chunking import chunk_pages, make_splitter
from rag.embeddings import Embedder
from rag.index import IndexFormatError, VectorIndex, load_index, make_index
from rag.loaders import LoadReport, Page, TextItem, load_file, load_files, load_text
from rag.store import DocumentRecord, MetadataStore

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
ALREADY_PRESENT = "already in the collection"
EMBEDDER_KEY = "embedder"  # in the store's meta table: which embedder (model, precision) made the vectors
MIN_ID_PREFIX = 4  # the shortest start of a document id that `find` takes for the id (as git does)

Progress = Callable[[str, float, int], None]  # (stage "load" | "embed", done, total); "load" counts files (or
# items), in fractions as a PDF's pages are read


def collection_names(data_dir: str | Path | None = None) -> list[str]:
    """The collections under the data dir, sorted."""
    root = Path(data_dir or settings.data_dir()) / "collections"
    return sorted(p.name for p in root.iterdir() if (p / "store.sqlite").exists()) if root.is_dir() else []


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"invalid collection name {name!r}: use 1 to 64 letters, digits, '-' or '_'")
    return name


class Collection:
    """Use `Collection.open(name)`; close it (or use `with`) when done."""

    def __init__(self, name: str, directory: Path, embedder: Embedder, store: MetadataStore, index: VectorIndex):
        self.name, self.directory, self.embedder, self.store, self.index = name, directory, embedder, store, index

    @classmethod
    def open(cls, name: str, data_dir: str | Path | None = None, embedder: Embedder | None = None,
             index_kind: str = "faiss") -> Collection:
        """Open the collection `name`, creating it if missing; finishes any write a crash interrupted."""
        check_name(name)
        directory = Path(data_dir or settings.data_dir()) / "collections" / name
        directory.mkdir(parents=True, exist_ok=True)
        if embedder is None:
            from rag.embeddings import SentenceTransformerEmbedder  # loads a model: only when none is given

            embedder = SentenceTransformerEmbedder()
        store = MetadataStore(directory / "store.sqlite")
        try:
            index = _open_index(directory / "index", embedder, store, index_kind)
            collection = cls(name, directory, embedder, store, index)
            collection._recover()
            identity, built_by = _identity(embedder), store.get_meta(EMBEDDER_KEY)
            if len(index) != store.count_chunks():
                warnings.warn(f"collection {name!r}: the index holds {len(index)} vectors but the store "
                              f"{store.count_chunks()} chunks; rebuilding the index from the store", stacklevel=2)
                collection.index = _rebuild(directory / "index", embedder, store, index_kind)
            elif built_by is not None and built_by != identity and len(index):
                warnings.warn(f"collection {name!r} was embedded with {built_by}, not {identity}: re-embedding its "
                              f"{len(index)} chunks", stacklevel=2)
                collection.index = _rebuild(directory / "index", embedder, store, index_kind)
            if built_by != identity:
                store.set_meta(EMBEDDER_KEY, identity)
        except BaseException:
            store.close()
            raise
        return collection

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    @property
    def index_dir(self) -> Path:
        return self.directory / "index"

    # --- writes ---------------------------------------------------------------------------------------------------

    def add_files(self, paths: Iterable[str | Path], password: str | None = None,
                  progress: Progress | None = None) -> list[LoadReport]:
        """Load, chunk, embed and index a batch; one report per path, in order.

        A file that fails to load gets `report.error` and the batch goes on. A file whose bytes are already in
        the collection (under any name) is skipped with the warning "already in the collection".
        """
        paths = list(paths)
        on_load = (lambda done, total, _name: progress("load", done, total)) if progress else None
        loaded = load_files(paths, password, on_load)
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
        self._recover()
        matches = self._matches(name_or_id)
        if len(matches) > 1 and matches[0].file_name != name_or_id:
            raise ValueError(_ambiguity(name_or_id, matches))
        if matches:
            self.store.set_state([d.doc_id for d in matches], "removing")
            self._recover()
        return len(matches)

    def replace(self, path: str | Path, password: str | None = None, progress: Progress | None = None) -> LoadReport:
        """Swap the document(s) named like `path` for the file's current content.

        The new file is loaded first: if it fails, the old document stays. The remove and the add are two
        steps, so a crash between them leaves neither version.
        """
        on_page = (lambda read, pages: progress("load", read / pages, 1)) if progress else None
        pages, report = load_file(path, password, on_page)
        if progress:
            progress("load", 1, 1)
        if report.ok and not self.store.has_document(report.content_hash):
            self.remove(report.name)
        self._ingest([(pages, report)], progress)
        return report

    def _ingest(self, loaded: list[tuple[list[Page], LoadReport]], progress: Progress | None) -> None:
        self._recover()
        splitter = make_splitter(self.embedder.count_tokens)
        names = {d.file_name for d in self.store.documents()}
        new, seen = [], set()
        for pages, report in loaded:
            if not report.ok:
                continue
            if report.content_hash in seen or self.store.has_document(report.content_hash):
                report.warnings.append(f"{ALREADY_PRESENT} (same content): not added again")
                continue
            if report.name in names:
                report.warnings.append(f"another document named {report.name!r} is in the collection; both are "
                                       "kept (use replace() to update a file, or remove the old one)")
            seen.add(report.content_hash)
            new.append((report, chunk_pages(pages, report.content_hash, report.name, splitter)))
        if not new:
            return
        texts = [chunk.text for _, chunks in new for chunk in chunks]
        on_embed = (lambda done, total: progress("embed", done, total)) if progress else None
        vectors = self.embedder.embed(texts, on_embed)  # (n_chunks, dim), before any write
        ids = self.store.add_documents(new, state="pending")  # step 1: the write-ahead record
        flat_ids = np.array([i for doc_ids in ids for i in doc_ids], np.int64)
        assert len(flat_ids) == len(vectors), (len(flat_ids), vectors.shape)
        self.index.add(flat_ids, vectors)
        try:
            self.index.save(self.index_dir)  # step 2
        except BaseException:
            # Keep memory like the disk; the pending rows are rolled off by the next write or open.
            self.index.remove(flat_ids)
            raise
        self.store.set_state([report.content_hash for report, _ in new], "ready")  # step 3

    def _recover(self) -> None:
        """Roll off documents a crash left "pending" (undo the add) or "removing" (finish the remove)."""
        stale = self.store.documents("pending") + self.store.documents("removing")
        if not stale:
            return
        ids = [i for d in stale for i in self.store.chunk_ids(d.doc_id)]
        self.index.remove(np.array(ids, np.int64))
        self.index.save(self.index_dir)  # always: an earlier failed save may have left these vectors on disk
        for d in stale:
            self.store.remove_document(d.doc_id)

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

    def page_text(self, doc_id: str, page: int) -> str:
        """Page `page` (1-based) of a document as indexed: its chunks joined where they overlap.

        The store keeps chunks, not pages, so whitespace the splitter dropped between chunks comes back
        as one newline; "" for a page without text.
        """
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
        return len(self.index)


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
    if index.dim != embedder.dim:
        raise ValueError(f"{directory} holds {index.dim}-d vectors but the embedder makes {embedder.dim}-d ones: "
                         "open the collection with the embedding model that built it")
    return index


def _identity(embedder: Embedder) -> str:
    return getattr(embedder, "identity", type(embedder).__name__)


def _rebuild(directory: Path, embedder: Embedder, store: MetadataStore, kind: str) -> VectorIndex:
    """A fresh index from every ready chunk's text; pending and removing documents are dropped first."""
    for state in ("pending", "removing"):
        for d in store.documents(state):
            store.remove_document(d.doc_id)
    chunks = list(store.all_chunks())
    index = make_index(embedder.dim, kind)
    if chunks:
        index.add(np.array([c.id for c in chunks], np.int64), embedder.embed([c.text for c in chunks]))
    index.save(directory)
    return index
