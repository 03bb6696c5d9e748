"""The PDF chat's handlers: upload into named collections, streamed answers with checked page citations.

`PdfChat` holds what every browser session shares (the data dir, the embedder, the model, a few open
collections: open_collections.py) and its methods are the handlers, written over domain objects so tests call
them without a server; `apps.pdf_chat.ui.build_demo` only wires them to Gradio components. Collections live under the
data dir (`--data-dir`, env LLMKIT_HOME) and persist across restarts; only an upload creates one (up to
`Limits.collections`). Uploaded files are copied into their collection so a document can be re-indexed and its
pages shown after the upload's temp file is gone (the page's handler has it deleted at once).

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
from dataclasses import dataclass, field, replace
from pathlib import Path

from apps.common import (
    LIMITS,
    NO_MODEL_SWITCH,
    STEP_CHARS,
    Limits,
    ModelSwitch,
    assistant,
    chat_turns,
    check_uploads,
    report_line,
    step_message,
    switch_model,
)
from apps.pdf_chat.open_collections import OpenCollection, OpenCollections
from core import ChatModel, ModelRequestError, RemoteLLM, load, settings
from rag import Collection, CollectionBusyError, collection_names, samples, stream_answer
from rag.answer import Source, Style, relevant_sources, standalone_query
from rag.embeddings import Embedder, SentenceTransformerEmbedder
from rag.grounded import grounded_answer

DEFAULT_COLLECTION = "sample"
SAMPLE_PDF = samples.FOLDER / "nist-sp800-90b-entropy-suite-user-guide.pdf"
SOURCE_COLUMNS = ["#", "file", "page", "score", "passage"]
AGENT_INSTRUCTIONS = ("You answer questions about the user's documents. Search them first, read a page when a "
                      "passage is not enough, and answer with the file and page you used.")
SMALL_MODEL_SNIPPET_CHARS = 200  # of each search hit shown to a small model: several steps fit its prompt

Progress = Callable[[float, str], None]  # (fraction done, what is happening)


@dataclass
class Settings:
    """What a user can change per chat in the Settings panel."""

    collection: str = DEFAULT_COLLECTION
    temperature: float = 0.0
    k: int = 5
    hybrid: bool = True
    agent_mode: bool = False
    style: Style = "grounded"  # how answers are made (rag.answer): quotes the model chooses, or its own words


@dataclass
class Reply:
    """One update of the chat while an answer streams: the assistant messages so far and the sources."""

    messages: list[dict]
    sources: list[Source] = field(default_factory=list)


class PdfChat:
    def __init__(self, data_dir: str | Path | None = None, llm: ChatModel | None = None,
                 embedder: Embedder | None = None, agent_model: ChatModel | None = None,
                 model_switch: ModelSwitch = NO_MODEL_SWITCH, limits: Limits = LIMITS):
        """Loads the embedder and the model now (once), not on the first question.

        `agent_model`: the core.ChatModel of agent mode; default: `llm`. Either runs at the chat's temperature.
        `model_switch`: whether `set_model` may change the model (default: no; the operator's flags decide).
        `limits`: what a request may bring, and how many collections uploads may create.
        """
        self.data_dir = Path(data_dir or settings.data_dir())
        self.embedder = embedder or SentenceTransformerEmbedder()
        self.llm = llm or load()
        self.agent_model = agent_model
        self.model_switch = model_switch
        self.limits = limits
        self.open_collections = OpenCollections(self.data_dir, self.embedder, limits.collections)

    def set_model(self, spec: str) -> str:
        """Switch the model every chat uses (see `core.load`), if `model_switch` allows `spec`; when it does not, or
        on failure, keep the current one and say why."""
        self.llm, status = switch_model(self.llm, spec, self.model_switch)
        return status

    # --- collections and documents --------------------------------------------------------------------------------

    def collections(self) -> list[str]:
        return collection_names(self.data_dir)

    def ensure_sample(self) -> None:
        """The bundled sample PDF in the default collection, so a newcomer has something to ask about."""
        if SAMPLE_PDF.exists() and DEFAULT_COLLECTION not in self.collections():
            self.upload(DEFAULT_COLLECTION, [SAMPLE_PDF])

    def upload(self, name: str, paths: list[str | Path], progress: Progress | None = None,
               delete_inputs: bool = False) -> str:
        """Add files to collection `name` (created if new, within `limits.collections`); returns the per-file
        report as Markdown.

        Files over the limits are refused before reading; every other file gets its own line, and a bad
        file never stops the others or changes the collection. `delete_inputs`: the files are temp copies (a web
        upload's): deleted once copied into the collection or refused, whatever happens.
        """
        try:
            return self._upload(name, list(map(Path, paths)), progress)
        finally:
            if delete_inputs:
                for path in paths:
                    Path(path).unlink(missing_ok=True)

    def _upload(self, name: str, paths: list[Path], progress: Progress | None) -> str:
        if not paths:
            return "Choose one or more files to upload."
        accepted, lines = check_uploads(paths, self.limits)
        if not accepted:
            return "\n".join(lines)
        try:
            self.open_collections.create(name)
        except ValueError as error:
            return f"**Nothing added:** {error}."
        with self.open_collections.use(name) as entry:
            return self._add_files(entry.collection, entry.lock, accepted, lines, progress)

    def _add_files(self, collection: Collection, lock: threading.Lock, accepted: list[Path], lines: list[str],
                   progress: Progress | None) -> str:
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
        """Rows for the documents table: file, pages, chunks, pages needing OCR, added (none for a collection that
        does not exist)."""
        with self.open_collections.use(name) as entry:
            if entry is None:
                return []
            with entry.lock:
                records = entry.collection.documents()
        return [[d.file_name, d.pages_total, d.n_chunks, ", ".join(map(str, d.pages_needing_ocr)) or "-",
                 d.added_at[:19].replace("T", " ")] for d in records]

    def remove(self, name: str, file_name: str) -> str:
        with self.open_collections.use(name) as entry:
            if entry is None:
                return f"There is no collection {name!r}."
            collection = entry.collection
            with entry.lock:
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
        with self.open_collections.use(name) as entry:
            if entry is None:
                return f"There is no collection {name!r}."
            with entry.lock:
                try:
                    record = entry.collection.find(file_name)
                except ValueError as error:  # several documents have this name
                    return f"{error}."
                if record is None:
                    return f"There is no document {file_name!r} in {name!r}."
                try:
                    report = entry.collection.replace(record.path)
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
        if len(question) > self.limits.question_chars:
            yield Reply([assistant(f"The question is {len(question)} characters long; the limit is "
                                   f"{self.limits.question_chars}. Shorten it and ask again.")])
            return
        with self.open_collections.use(settings.collection) as entry:  # kept open until the answer ends
            if entry is None or not entry.collection.documents():
                yield Reply([assistant(f"The collection {settings.collection!r} has no documents yet: upload a "
                                       "PDF first.")])
                return
            turns = chat_turns(history, self.limits)
            if settings.agent_mode:
                yield from self._ask_agent(question, turns, settings, entry)
            else:
                yield from self._answer(question, turns, settings, entry)

    def _answer(self, question: str, turns: list[dict], settings: Settings, entry: OpenCollection) -> Iterator[Reply]:
        try:
            with entry.lock:
                stream = stream_answer(entry.retriever, self.llm, question, k=settings.k,
                                       mode="hybrid" if settings.hybrid else "dense", history=turns,
                                       style=settings.style, temperature=settings.temperature)
        except ValueError as error:  # the question and its sources do not fit this model's context
            yield Reply([assistant(f"Cannot answer with this model: {error}.")])
            return
        text = ""
        try:
            for delta in stream:
                text += delta
                yield Reply([assistant(text)], stream.sources)
        finally:  # the page's Stop closes this generator: the engine stops writing too
            stream.cancel()
        result = stream.answer
        final = result.text
        if result.finish_reason == "length":
            final += "\n\n_(cut off at the answer length limit)_"
        yield Reply([assistant(final)], result.sources)

    def _ask_agent(self, question: str, turns: list[dict], settings: Settings,
                   entry: OpenCollection) -> Iterator[Reply]:
        """The question goes to an agent with the collection's tools, after the chat's earlier `turns`; each step
        shows as it happens. The agent only finds passages: the answer is `rag.grounded.grounded_answer`'s, quoted
        from the `settings.k` passages closest to the question among those the run's tools showed and those a
        search for the question itself finds (a follow-up with the earlier question's words: rag.answer's
        `standalone_query`), however the run ended (answered, stopped, or the model failed). The
        model's own final_answer shows as a folded step.

        A small model's searches are held to phrases of the question (agents.builtin.question_spans) and shown
        shorter snippets (see `is_small`).
        """
        from agents import Agent, rag_tools, summarize_tool
        from agents.builtin import SNIPPET_CHARS, question_spans

        collection, lock, model = entry.collection, entry.lock, self.agent_model or self.llm
        small = is_small(model)
        found: list[Source] = []
        tools = [*rag_tools(collection, settings.k, entry.retriever, lock, found=found,
                            query_spans=(question_spans(question) or None) if small else None,
                            snippet_chars=SMALL_MODEL_SNIPPET_CHARS if small else SNIPPET_CHARS),
                 summarize_tool(collection, self.llm, lock)]
        agent = Agent(model, tools, instructions=AGENT_INSTRUCTIONS, max_steps=6,
                      sampling={"temperature": settings.temperature})
        messages = []
        run = agent.stream(question, history=turns)
        try:
            for step in run:
                messages.append(_step_message(step))
                yield Reply(list(messages))
        except ModelRequestError as error:  # the prompt outgrew the context, or a server refused it: answer anyway
            messages.append(_note("⚠️ the agent stopped", str(error)))
        if run.result is not None and run.result.status == "stopped":
            messages.append(_note("⏹ the agent stopped", run.result.stop_reason))
        query, mode = standalone_query(question, turns), "hybrid" if settings.hybrid else "dense"
        with lock:  # the question's own passages too: SmolLM2's searches ("after", "server") miss 4 pages in 10
            found += relevant_sources(entry.retriever, query, settings.k, mode, None, min_similarity=-1.0)
        sources = closest_passages(query, found, self.embedder, settings.k)
        try:
            answer = grounded_answer(question, sources, self.llm, self.embedder, query=query)
        except ValueError as error:  # the question and its sources do not fit this model's context
            yield Reply([*messages, assistant(f"Cannot answer with this model: {error}.")], sources)
            return
        yield Reply([*messages, assistant(answer.text)], answer.sources)

    def page_view(self, name: str, source: Source) -> str:
        """HTML of the source's page as indexed, with the cited passage highlighted."""
        text = ""
        with self.open_collections.use(name) as entry:
            if entry is not None:
                with entry.lock:
                    record = entry.collection.find(source.doc_id or source.file)
                    text = entry.collection.page_text(record.doc_id, source.page) if record else ""
        if not text:
            return f"<p>Page {source.page} of {html.escape(source.file)} is no longer in the collection.</p>"
        at = text.find(source.text)
        body = (html.escape(text) if at < 0 else html.escape(text[:at]) + "<mark>" + html.escape(source.text)
                + "</mark>" + html.escape(text[at + len(source.text):]))
        return (f"<h4>{html.escape(source.file)}, page {source.page}</h4>"
                f"<div class='page-text' style='white-space: pre-wrap'>{body}</div>")


def source_rows(sources: list[Source]) -> list[list]:
    return [[s.number, s.file, s.page, round(s.score, 4), " ".join(s.text.split())[:160]] for s in sources]


def is_small(model: ChatModel) -> bool:
    """Whether agent mode holds `model`'s searches to phrases of the question: a local model is small (the
    embedded SmolLM2 searched for "2022" and for the tool's own name), a core.RemoteLLM (a server behind
    `--model URL`) is big, whatever its size."""
    return not isinstance(model, RemoteLLM)


def closest_passages(question: str, passages: list[Source], embedder: Embedder, k: int) -> list[Source]:
    """The `k` passages closest to the question by the embedder's cosine (each one's `similarity` now), each once
    (by document, page and text), numbered from 1 closest first as a retriever ranks them; copies, so what the
    tools found is left as it was."""
    first: dict[tuple, Source] = {}
    for passage in passages:
        first.setdefault((passage.doc_id, passage.page, passage.text), passage)
    unique = list(first.values())
    if not unique:
        return []
    vectors = embedder.embed([question, *(p.text for p in unique)])  # (1 + n, dim), normalised
    similarities = (vectors[1:] @ vectors[0]).tolist()
    ranked = sorted(range(len(unique)), key=lambda i: -similarities[i])[:k]  # stable: ties keep the order found
    return [replace(unique[i], number=n, similarity=similarities[i], cited=False)
            for n, i in enumerate(ranked, start=1)]


def _step_message(step) -> dict:
    """An agent step as a chat message (apps.common.step_message), the model's final_answer folded like a tool
    step: it is the model's own writing, not the answer."""
    if step.answer is None:
        return step_message(step)
    return _note("💬 final_answer (the model's own words, unchecked)", step.answer)


def _note(title: str, text: str) -> dict:
    return {"role": "assistant", "content": text[:STEP_CHARS], "metadata": {"title": title}}
