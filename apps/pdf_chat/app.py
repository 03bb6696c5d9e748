"""The PDF chat's handlers: upload into named collections, streamed answers with checked page citations.

`PdfChat` holds what every browser session shares (the data dir, the embedder, the model, open
collections) and its methods are the handlers, written over domain objects so tests call them without
a server; `apps.pdf_chat.ui.build_demo` only wires them to Gradio components. Collections live under the
data dir (`--data-dir`, env LLMKIT_HOME) and persist across restarts; uploaded files are copied into their
collection so a document can be re-indexed and its pages shown after the upload's temp file is gone.

Threads: Gradio runs handlers on worker threads. A collection (SQLite store, FAISS index, BM25) is used
by one thread at a time under its lock; generation happens outside the lock, in the engine, which
batches concurrent questions.
"""

from __future__ import annotations

import hashlib
import html
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from apps.common import (
    LIMITS,
    NO_MODEL_SWITCH,
    ModelSwitch,
    agent_messages,
    assistant,
    chat_turns,
    check_uploads,
    report_line,
    switch_model,
)
from core import ChatModel, load, settings
from rag import Collection, CollectionBusyError, Retriever, collection_names, samples, stream_answer
from rag.answer import Source
from rag.collection import check_name
from rag.embeddings import Embedder, SentenceTransformerEmbedder

DEFAULT_COLLECTION = "sample"
SAMPLE_PDF = samples.FOLDER / "nist-sp800-90b-entropy-suite-user-guide.pdf"
SOURCE_COLUMNS = ["#", "file", "page", "score", "passage"]
AGENT_INSTRUCTIONS = ("You answer questions about the user's documents. Search them first, read a page when a "
                      "passage is not enough, and answer with the file and page you used.")

Progress = Callable[[float, str], None]  # (fraction done, what is happening)


@dataclass
class Settings:
    """What a user can change per chat in the Settings panel."""

    collection: str = DEFAULT_COLLECTION
    temperature: float = 0.0
    k: int = 5
    hybrid: bool = True
    agent_mode: bool = False


@dataclass
class Reply:
    """One update of the chat while an answer streams: the assistant messages so far and the sources."""

    messages: list[dict]
    sources: list[Source] = field(default_factory=list)


class PdfChat:
    def __init__(self, data_dir: str | Path | None = None, llm: ChatModel | None = None,
                 embedder: Embedder | None = None, agent_model: ChatModel | None = None,
                 model_switch: ModelSwitch = NO_MODEL_SWITCH):
        """Loads the embedder and the model now (once), not on the first question.

        `agent_model`: the core.ChatModel of agent mode; default: `llm`. Either runs at the chat's temperature.
        `model_switch`: whether `set_model` may change the model (default: no; the operator's flags decide).
        """
        self.data_dir = Path(data_dir or settings.data_dir())
        self.embedder = embedder or SentenceTransformerEmbedder()
        self.llm = llm or load()
        self.agent_model = agent_model
        self.model_switch = model_switch
        self._collections: dict[str, tuple[Collection, Retriever, threading.Lock]] = {}
        self._open_lock = threading.Lock()

    def set_model(self, spec: str) -> str:
        """Switch the model every chat uses (see `core.load`), if `model_switch` allows `spec`; when it does not, or
        on failure, keep the current one and say why."""
        self.llm, status = switch_model(self.llm, spec, self.model_switch)
        return status

    # --- collections and documents --------------------------------------------------------------------------------

    def collections(self) -> list[str]:
        return collection_names(self.data_dir)

    def _open(self, name: str) -> tuple[Collection, Retriever, threading.Lock]:
        check_name(name)
        with self._open_lock:
            if name not in self._collections:
                collection = Collection.open(name, self.data_dir, embedder=self.embedder)
                self._collections[name] = (collection, Retriever(collection), threading.Lock())
            return self._collections[name]

    def ensure_sample(self) -> None:
        """The bundled sample PDF in the default collection, so a newcomer has something to ask about."""
        if SAMPLE_PDF.exists() and DEFAULT_COLLECTION not in self.collections():
            self.upload(DEFAULT_COLLECTION, [SAMPLE_PDF])

    def upload(self, name: str, paths: list[str | Path], progress: Progress | None = None) -> str:
        """Add files to collection `name` (created if new); returns the per-file report as Markdown.

        Files over the limits are refused before reading; every other file gets its own line, and a bad
        file never stops the others or changes the collection.
        """
        if not paths:
            return "Choose one or more files to upload."
        accepted, lines = check_uploads(list(map(Path, paths)))
        if not accepted:
            return "\n".join(lines)
        collection, _, lock = self._open(name)
        kept, new_copies = [], set()
        for path in accepted:
            copy = self._copy_path(collection, path)
            if not copy.exists():
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, copy)
                new_copies.add(copy)
            kept.append(copy)

        def on_progress(stage: str, done: float, total: int) -> None:
            if progress is not None:  # reading takes ~40% of an ingest, embedding the rest (bench/results/rag.md)
                start, share = (0.0, 0.4) if stage == "load" else (0.4, 0.6)
                progress(start + share * done / max(total, 1), "reading" if stage == "load" else "embedding")

        try:
            with lock:
                reports = collection.add_files(kept, progress=on_progress)
        except CollectionBusyError as error:  # another process (the CLI, another app) is writing this collection
            for copy in new_copies:
                shutil.rmtree(copy.parent, ignore_errors=True)
            return "\n".join([*lines, f"**Nothing added:** {error}."])
        for report, copy in zip(reports, kept, strict=True):
            if copy in new_copies and not collection.store.has_document(report.content_hash or ""):
                shutil.rmtree(copy.parent, ignore_errors=True)  # the file was refused
            lines.append(report_line(report))
        return "\n".join(lines)

    @staticmethod
    def _copy_path(collection: Collection, path: Path) -> Path:
        """Where an upload's copy lives inside its collection: files/<content hash>/<name>."""
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return collection.directory / "files" / digest / path.name

    def documents(self, name: str) -> list[list]:
        """Rows for the documents table: file, pages, chunks, pages needing OCR, added."""
        collection, _, lock = self._open(name)
        with lock:
            records = collection.documents()
        return [[d.file_name, d.pages_total, d.n_chunks, ", ".join(map(str, d.pages_needing_ocr)) or "-",
                 d.added_at[:19].replace("T", " ")] for d in records]

    def remove(self, name: str, file_name: str) -> str:
        collection, _, lock = self._open(name)
        with lock:
            paths = [Path(d.path) for d in collection.documents() if d.file_name == file_name]
            try:
                removed = collection.remove(file_name)
            except CollectionBusyError as error:
                return f"Nothing removed: {error}."
        for path in paths:
            if collection.directory in path.parents:
                shutil.rmtree(path.parent, ignore_errors=True)
        return f"Removed {file_name}." if removed else f"There is no document {file_name!r} in {name!r}."

    def reindex(self, name: str, file_name: str) -> str:
        """Read the document's file again and replace it (after a chunking or model change, or an edit)."""
        collection, _, lock = self._open(name)
        with lock:
            try:
                record = collection.find(file_name)
            except ValueError as error:  # several documents have this name
                return f"{error}."
            if record is None:
                return f"There is no document {file_name!r} in {name!r}."
            try:
                report = collection.replace(record.path)
            except CollectionBusyError as error:
                return f"Not re-indexed: {error}."
        return report_line(report)

    # --- questions ------------------------------------------------------------------------------------------------

    def ask(self, question: str, history: list[dict], settings: Settings) -> Iterator[Reply]:
        """The answer to `question`, streamed: each Reply holds the assistant messages so far.

        `history`: the chat's earlier {"role", "content"} messages (tool steps included; only plain
        turns go to the model). Problems the user can fix come back as the answer's text.
        """
        question = question.strip()
        if not question:
            yield Reply([assistant("Type a question first.")])
            return
        if len(question) > LIMITS.question_chars:
            yield Reply([assistant(f"The question is {len(question)} characters long; the limit is "
                                   f"{LIMITS.question_chars}. Shorten it and ask again.")])
            return
        collection, retriever, lock = self._open(settings.collection)
        if not collection.documents():
            yield Reply([assistant(f"The collection {settings.collection!r} has no documents yet: upload a PDF "
                                   "first.")])
            return
        turns = chat_turns(history)
        if settings.agent_mode:
            yield from self._ask_agent(question, turns, settings, collection, retriever, lock)
            return
        try:
            with lock:
                stream = stream_answer(retriever, self.llm, question, k=settings.k,
                                       mode="hybrid" if settings.hybrid else "dense",
                                       history=turns, temperature=settings.temperature)
        except ValueError as error:  # the question and its sources do not fit this model's context
            yield Reply([assistant(f"Cannot answer with this model: {error}.")])
            return
        text = ""
        for delta in stream:
            text += delta
            yield Reply([assistant(text)], stream.sources)
        result = stream.answer
        final = result.text
        if result.invalid_citations:
            dropped = ", ".join(result.invalid_citations)
            final += f"\n\n_(removed citations of pages that were not retrieved: {dropped})_"
        if result.finish_reason == "length":
            final += "\n\n_(cut off at the answer length limit)_"
        yield Reply([assistant(final)], result.sources)

    def _ask_agent(self, question: str, turns: list[dict], settings: Settings, collection: Collection,
                   retriever: Retriever, lock: threading.Lock) -> Iterator[Reply]:
        """The question goes to an agent with the collection's tools, after the chat's earlier `turns`; each step
        shows as it happens."""
        from agents import Agent, rag_tools, summarize_tool

        tools = [*rag_tools(collection, settings.k, retriever, lock), summarize_tool(collection, self.llm, lock)]
        agent = Agent(self.agent_model or self.llm, tools, instructions=AGENT_INSTRUCTIONS, max_steps=6,
                      sampling={"temperature": settings.temperature})
        for messages in agent_messages(agent.stream(question, history=turns)):
            yield Reply(messages)

    def page_view(self, name: str, source: Source) -> str:
        """HTML of the source's page as indexed, with the cited passage highlighted."""
        collection, _, lock = self._open(name)
        with lock:
            record = collection.find(source.doc_id or source.file)
            text = collection.page_text(record.doc_id, source.page) if record else ""
        if not text:
            return f"<p>Page {source.page} of {html.escape(source.file)} is no longer in the collection.</p>"
        at = text.find(source.text)
        body = (html.escape(text) if at < 0 else html.escape(text[:at]) + "<mark>" + html.escape(source.text)
                + "</mark>" + html.escape(text[at + len(source.text):]))
        return (f"<h4>{html.escape(source.file)}, page {source.page}</h4>"
                f"<div class='page-text' style='white-space: pre-wrap'>{body}</div>")


def source_rows(sources: list[Source]) -> list[list]:
    return [[s.number, s.file, s.page, round(s.score, 4), " ".join(s.text.split())[:160]] for s in sources]

