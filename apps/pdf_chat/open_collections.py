"""The collections the PDF chat keeps open: at most `max_open`, the least recently used closed first, never one in use.

An open collection holds an SQLite handle, its lock file and its index in memory, so a page whose users type many
names must not keep one of each open. Using a name never creates anything: a collection that does not exist (or
whose name could not be one) is None, and nothing is written. Only `create` (an upload, "New collection") makes one,
and only up to `max_collections` in the data dir; `delete` removes one nobody here uses.

Threads: `use` counts its users while they hold an entry; an entry in use is never closed, so the cache may hold
more than `max_open` while that many are in use, and shrinks as they are released. A collection itself is used
by one thread at a time under the entry's `lock` (the caller takes it).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rag import Collection, Retriever, collection_names
from rag.collection import check_name, delete_collection
from rag.embeddings import Embedder

MAX_OPEN = 8  # collections kept open at once, beyond those in use


@dataclass
class OpenCollection:
    collection: Collection
    retriever: Retriever
    lock: threading.Lock = field(default_factory=threading.Lock)  # held while a thread uses the collection
    users: int = 0  # threads between `use`'s enter and exit


class OpenCollections:
    def __init__(self, data_dir: Path, embedder: Embedder, max_collections: int, max_open: int = MAX_OPEN):
        assert max_open > 0 and max_collections > 0
        self.data_dir, self.embedder = data_dir, embedder
        self.max_collections, self.max_open = max_collections, max_open
        self._open: OrderedDict[str, OpenCollection] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def exists(self, name: str) -> bool:
        try:
            check_name(name)
        except ValueError:
            return False
        return (self.data_dir / "collections" / name / "store.sqlite").exists()

    def create(self, name: str) -> None:
        """Make the collection `name` if it does not exist; ValueError saying why when the name is not one or the
        data dir already holds `max_collections`."""
        check_name(name)
        with self._lock:
            if name in self._open or self.exists(name):
                return
            if len(collection_names(self.data_dir)) >= self.max_collections:
                raise ValueError(f"there are already {self.max_collections} collections, the most this app creates: "
                                 "upload into an existing one, or ask the operator to remove one")
            self._add(name)
            self._close_unused()

    def delete(self, name: str) -> None:
        """Close and delete the collection `name` (`rag.collection.delete_collection`: under its write lock).
        ValueError while a thread here uses it; FileNotFoundError when there is none; CollectionBusyError while
        another process writes it."""
        check_name(name)
        with self._lock:  # no `use` opens it again meanwhile
            entry = self._open.get(name)
            if entry is not None and entry.users:
                raise ValueError(f"collection {name!r} is in use (a question or an upload); try again when it is "
                                 "done")
            if entry is not None:
                self._open.pop(name).collection.close()
            delete_collection(name, self.data_dir)

    @contextmanager
    def use(self, name: str) -> Iterator[OpenCollection | None]:
        """The open collection `name` while the caller uses it; None when there is no such collection."""
        with self._lock:
            entry = self._open.get(name)
            if entry is None and self.exists(name):
                entry = self._add(name)
            if entry is not None:
                self._open.move_to_end(name)
                entry.users += 1
                self._close_unused()
        try:
            yield entry
        finally:
            if entry is not None:
                with self._lock:
                    entry.users -= 1
                    self._close_unused()

    def _add(self, name: str) -> OpenCollection:
        """Open `name` (creating it if missing) into the cache; the caller holds `_lock`."""
        collection = Collection.open(name, self.data_dir, embedder=self.embedder)
        entry = self._open[name] = OpenCollection(collection, Retriever(collection))
        return entry

    def _close_unused(self) -> None:
        """Close the least recently used entries nobody uses until at most `max_open` are open; holds `_lock`."""
        for name in [name for name, entry in self._open.items() if entry.users == 0]:
            if len(self._open) <= self.max_open:
                break
            self._open.pop(name).collection.close()

    def close(self) -> None:
        """Close every collection nobody uses."""
        with self._lock:
            for name in [name for name, entry in self._open.items() if entry.users == 0]:
                self._open.pop(name).collection.close()
