"""The PDF chat's handlers: upload into named collections, streamed answers with checked page citations.

`PdfChat` holds what every browser session shares (the data dir, the embedder, the model, a few open
collections: open_collections.py) and its methods are the handlers, written over domain objects so tests call
them without a server; `apps.pdf_chat.ui.build_demo` only wires them to Gradio components. Collections live under the
data dir (`--data-dir`, env LLMKIT_HOME) and persist across restarts; "New collection" (`create_collection`) or an
upload that adds a file creates one (up to `Limits.collections`), "Delete collection" removes one. Uploaded files are
copied into their collection so a document can be re-indexed and its pages shown after the upload's temp file is
gone (the page's handler has it deleted at once). Messages are the web page's: they name its controls, never the
command line's flags.

Threads: Gradio runs handlers on worker threads. A collection (SQLite store, FAISS index, BM25) is used
by one thread at a time under its lock; generation happens outside the lock, in the engine, which
batches concurrent questions.
"""

from __future__ import annotations

import base64
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
from core import ChatModel, ContextLengthError, ModelRequestError, RemoteLLM, load, settings
from rag import Collection, CollectionBusyError, collection_names, samples, stream_answer
from rag.answer import Source, Style, relevant_sources, standalone_query
from rag.chunking import CHUNK_TOKENS
from rag.collection import ALREADY_PRESENT, CollectionDeletedError, check_name
from rag.embeddings import Embedder, SentenceTransformerEmbedder
from rag.grounded import grounded_answer
from rag.loaders import NEEDS_PASSWORD, LoadReport
from rag.pages import PageError, PageImage, render_page

DEFAULT_COLLECTION = "sample"
SMALL_MODEL_STRING_CHARS = 80  # the longest string a small model's agent step may write: its answers go unused
TOO_LONG_FOR_MODEL = ("The question and its passages do not fit this model's context. Ask a shorter question, lower "
                      "\"Passages retrieved\" in Settings, or choose a model with a longer context there.")
SAMPLE_PDF = samples.FOLDER / "nist-sp800-90b-entropy-suite-user-guide.pdf"
SOURCE_COLUMNS = ["#", "file", "page", "relevance", "passage"]
DOCUMENT_COLUMNS = ["file", "pages", "passages", "needs OCR"]
RELEVANCE = (0.2, 0.7)  # the question-passage cosines shown as no dot and as five (all-MiniLM-L6-v2's usual span)
STOPPED = "_(stopped: the answer above is incomplete)_"
AGENT_INSTRUCTIONS = ("You answer questions about the user's documents. Search them first, read a page when a "
                      "passage is not enough, and answer with the file and page you used.")
SMALL_MODEL_SNIPPET_CHARS = 200  # of each search hit shown to a small model: several steps fit its prompt

Progress = Callable[[float, str], None]  # (fraction done, what is happening)
WRITE_REFUSED = (CollectionBusyError, CollectionDeletedError)  # another process writes it, or deleted it


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
               delete_inputs: bool = False, password: str | None = None) -> str:
        """Add files to collection `name` (created if new, within `limits.collections`, and kept only if a file was
        added); returns the per-file report as Markdown.

        Files over the limits are refused before reading; every other file gets its own line, and a bad
        file never stops the others or changes the collection. `delete_inputs`: the files are temp copies (a web
        upload's): deleted once copied into the collection or refused, whatever happens. `password`: for the
        encrypted PDFs among them.
        """
        try:
            return self._upload(name, list(map(Path, paths)), progress, password or None)
        finally:
            if delete_inputs:
                for path in paths:
                    Path(path).unlink(missing_ok=True)

    def _upload(self, name: str, paths: list[Path], progress: Progress | None, password: str | None) -> str:
        if not paths:
            return "Choose one or more files to upload."
        accepted, lines = check_uploads(paths, self.limits)
        if not accepted:
            return "\n".join(lines)
        new = not self.open_collections.exists(name)
        try:
            self.open_collections.create(name)
        except ValueError as error:
            return f"**Nothing added:** {error}."
        with self.open_collections.use(name) as entry:
            report = self._add_files(entry.collection, entry.lock, accepted, lines, progress, password)
            empty = new and not entry.collection.documents()
        if empty:  # every file was refused: an upload leaves no empty collection behind
            try:
                self.open_collections.delete(name)
            except (ValueError, *WRITE_REFUSED):  # in use meanwhile (another tab's upload): it stays
                pass
        return report

    def _add_files(self, collection: Collection, lock: threading.Lock, accepted: list[Path], lines: list[str],
                   progress: Progress | None, password: str | None) -> str:
        kept, new_copies = [], set()
        for path in accepted:
            copy = self._copy_path(collection, path)
            if not copy.exists():
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, copy)
                new_copies.add(copy)
            kept.append(copy)

        read = [0.0]  # the reading stage's share done, where an OCR'd file's pages count while the bar waits

        def on_progress(stage: str, done: float, total: int) -> None:
            if progress is None:
                return
            if stage == "ocr":  # one file's scanned pages, seconds each: said in words, the bar stays
                progress(read[0], f"reading: OCR of page {done} of {total}")
            elif stage == "load":  # reading takes ~40% of an ingest, embedding the rest (bench/results/rag.md)
                read[0] = 0.4 * done / max(total, 1)
                progress(read[0], "reading")
            else:
                progress(0.4 + 0.6 * done / max(total, 1), "embedding")

        try:
            with lock:
                reports = collection.add_files(kept, password, progress=on_progress)
        except WRITE_REFUSED as error:  # another process (the CLI, another app) is writing this collection
            for copy in new_copies:
                shutil.rmtree(copy.parent, ignore_errors=True)
            return "\n".join([*lines, f"**Nothing added:** {write_refusal(error)}"])
        for report, copy in zip(reports, kept, strict=True):
            if copy in new_copies and not collection.store.has_document(report.content_hash or ""):
                shutil.rmtree(copy.parent, ignore_errors=True)  # the file was refused
            lines.append(upload_line(report))
        return "\n".join(lines)

    @staticmethod
    def _copy_path(collection: Collection, path: Path) -> Path:
        """Where an upload's copy lives inside its collection: files/<content hash>/<name>."""
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return collection.directory / "files" / digest / path.name

    def documents(self, name: str) -> list[list]:
        """Rows of DOCUMENT_COLUMNS: file, pages, passages (chunks), pages needing OCR ("" when none); none for a
        collection that does not exist."""
        with self.open_collections.use(name) as entry:
            if entry is None:
                return []
            with entry.lock:
                records = entry.collection.documents()
        return [[d.file_name, d.pages_total, d.n_chunks, ", ".join(map(str, d.pages_needing_ocr))] for d in records]

    def remove(self, name: str, file_name: str) -> str:
        with self.open_collections.use(name) as entry:
            if entry is None:
                return f"There is no collection {name!r}."
            collection = entry.collection
            with entry.lock:
                paths = [Path(d.path) for d in collection.documents() if d.file_name == file_name]
                try:
                    removed = collection.remove(file_name)
                except WRITE_REFUSED as error:
                    return f"Nothing removed: {write_refusal(error)}"
        for path in paths:
            if collection.directory in path.parents:
                shutil.rmtree(path.parent, ignore_errors=True)
        return f"Removed {file_name}." if removed else f"There is no document {file_name!r} in {name!r}."

    def reindex(self, name: str, file_name: str, password: str | None = None) -> str:
        """Read the document's file again, chunk it at the collection's passage size and embed it, and swap it in
        (after a passage size change, or an edit); says how many pages and passages it has now."""
        with self.open_collections.use(name) as entry:
            if entry is None:
                return f"There is no collection {name!r}."
            collection = entry.collection
            with entry.lock:
                try:
                    record = collection.find(file_name)
                except ValueError as error:  # several documents have this name
                    return f"{error}."
                if record is None:
                    return f"There is no document {file_name!r} in {name!r}."
                try:
                    report = collection.replace(record.path, password or None)
                except WRITE_REFUSED as error:
                    return f"Not re-indexed: {write_refusal(error)}"
                if not report.ok or report.warnings:
                    return f"Not re-indexed:\n{upload_line(report)}"
                passages = collection.find(report.content_hash).n_chunks
                tokens = collection.chunk_tokens
        return (f"Re-indexed {report.name}: read again, {report.pages_total} pages, {passages} passages of up to "
                f"{tokens} tokens.")

    def chunk_tokens(self, name: str) -> int:
        """The passage size of collection `name` (the default for one that does not exist)."""
        with self.open_collections.use(name) as entry:
            if entry is None:
                return CHUNK_TOKENS
            with entry.lock:
                return entry.collection.chunk_tokens

    def set_chunk_tokens(self, name: str, tokens: float | int | None) -> str:
        """Set the passage size later uploads and re-indexes of collection `name` use; says what it changes."""
        with self.open_collections.use(name) as entry:
            if entry is None:
                return f"There is no collection {name!r}: create it or upload into it first."
            whole = int(tokens) if isinstance(tokens, float) and tokens.is_integer() else tokens  # a number box's
            try:
                with entry.lock:
                    entry.collection.set_chunk_tokens(whole)
            except ValueError as error:
                return f"Not changed: {error}."
            except WRITE_REFUSED as error:
                return f"Not changed: {write_refusal(error)}"
        return (f"Passages of {name!r} are now up to {whole} tokens for new uploads. Documents already there keep "
                "theirs until you select one and press Re-index.")

    def create_collection(self, name: str) -> str:
        """Make the empty collection `name`; a message saying it was made, or why not (not a valid name, one of this
        name exists, the data dir holds `limits.collections`)."""
        name = (name or "").strip()
        try:
            check_name(name)
        except ValueError:
            return (f"**Not created:** {name!r} cannot be a collection's name: use 1 to 64 letters, digits, '-' or "
                    "'_' (no spaces).")
        if self.open_collections.exists(name):
            return f"**Not created:** there is already a collection named {name!r}: pick it in the list above."
        try:
            self.open_collections.create(name)
        except ValueError as error:
            return f"**Not created:** {error}."
        return f"Created the collection {name!r}: upload files into it."

    def delete_collection(self, name: str) -> str:
        """Delete collection `name` with its documents, vectors and kept files; refused while a question or an
        upload here uses it, or another process writes it."""
        try:
            self.open_collections.delete(name)
        except FileNotFoundError:
            return f"There is no collection {name!r}."
        except ValueError as error:
            return f"**Not deleted:** {error}."
        except WRITE_REFUSED as error:
            return f"**Not deleted:** {write_refusal(error)}"
        return f"Deleted the collection {name!r}."

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
        text, stream = "", None
        try:
            with entry.lock:
                stream = stream_answer(entry.retriever, self.llm, question, k=settings.k,
                                       mode="hybrid" if settings.hybrid else "dense", history=turns,
                                       style=settings.style, temperature=settings.temperature)
            for delta in stream:
                text += delta
                yield Reply([assistant(text)], stream.sources)
        except ContextLengthError:
            yield Reply([assistant(TOO_LONG_FOR_MODEL)])
            return
        finally:  # the page's Stop closes this generator: the engine stops writing too
            if stream is not None:
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
                      max_string_length=SMALL_MODEL_STRING_CHARS if small else 300,  # its final_answer is not shown
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
        except ContextLengthError:
            yield Reply([*messages, assistant(TOO_LONG_FOR_MODEL)], sources)
            return
        yield Reply([*messages, assistant(answer.text)], answer.sources)

    def page_view(self, name: str, source: Source) -> str:
        """HTML of the source's page: the PDF page as an image with the cited passage highlighted (rag.pages), and
        the page's text as indexed, the passage in <mark>, folded under "Show text". The text alone when the
        document is not a PDF or its file cannot be shown (gone, damaged, encrypted: the password is not kept);
        the text first and the image folded when the passage is not found on the image."""
        text, pdf = "", None
        with self.open_collections.use(name) as entry:
            if entry is not None:
                with entry.lock:
                    record = entry.collection.find(source.doc_id or source.file)
                    if record:
                        text = entry.collection.page_text(record.doc_id, source.page)
                        pdf = entry.collection.source_file(record.doc_id)
        if not text:
            return f"<p>Page {source.page} of {html.escape(source.file)} is no longer in the collection.</p>"
        heading = f"<h4>{html.escape(source.file)}, page {source.page}</h4>"
        at = text.find(source.text)
        body = (html.escape(text) if at < 0 else html.escape(text[:at]) + "<mark>" + html.escape(source.text)
                + "</mark>" + html.escape(text[at + len(source.text):]))
        text_view = f"<div class='page-text' style='white-space: pre-wrap'>{body}</div>"
        try:
            rendered = render_page(pdf, source.page, source.text) if pdf else None
        except (OSError, PageError):  # removed meanwhile, damaged, encrypted, or too slow to render
            rendered = None
        if rendered is None:
            return heading + text_view
        image = page_image(rendered, f"Page {source.page} of {source.file}")
        if not rendered.boxes:
            return heading + text_view + f"<details><summary>Show the page</summary>{image}</details>"
        return heading + image + f"<details><summary>Show text</summary>{text_view}</details>"


def page_image(rendered: PageImage, alt: str) -> str:
    """HTML of a rendered page: the image (an inline PNG, as wide as the column) and over it an empty
    `.page-passage` box around the highlighted lines, which the page scrolls into view."""
    width, height = rendered.image.size
    passage = ""
    if rendered.boxes:
        left, top, right, bottom = (f(b[i] for b in rendered.boxes) for i, f in enumerate((min, min, max, max)))
        passage = (f"<span class='page-passage' style='position: absolute; left: {100 * left / width:.2f}%; "
                   f"top: {100 * top / height:.2f}%; width: {100 * (right - left) / width:.2f}%; "
                   f"height: {100 * (bottom - top) / height:.2f}%'></span>")
    data = base64.b64encode(rendered.png()).decode("ascii")
    return (f"<div class='page-image' style='position: relative'><img src='data:image/png;base64,{data}' "
            f"alt='{html.escape(alt, quote=True)}' style='display: block; width: 100%; height: auto'>{passage}</div>")


def default_style(model: ChatModel) -> Style:
    """Grounded answers for the embedded and other local models, free ones for a served model (core.RemoteLLM),
    taken to be a large one: a 135M model cannot be trusted to restate figures (rag.grounded)."""
    return "free" if isinstance(model, RemoteLLM) else "grounded"


def source_rows(sources: list[Source]) -> list[list]:
    """Rows of SOURCE_COLUMNS: rank, file, page, relevance (`relevance`), the passage's start."""
    return [[s.number, s.file, s.page, relevance(s.similarity), " ".join(s.text.split())[:160]] for s in sources]


def relevance(similarity: float) -> str:
    """The question-passage cosine as five dots, filled in proportion over RELEVANCE: "●●●○○" (the retriever's
    fusion scores, 0.01 to 0.03, would mean nothing to a reader)."""
    low, high = RELEVANCE
    filled = round(5 * min(max((similarity - low) / (high - low), 0.0), 1.0))
    return "●" * filled + "○" * (5 - filled)


def document_table(rows: list[list]) -> dict:
    """The documents table for `PdfChat.documents`' rows: the "needs OCR" column only when a document needs OCR,
    so that the table fits a narrow column."""
    if any(row[3] for row in rows):
        return {"headers": DOCUMENT_COLUMNS, "data": rows}
    return {"headers": DOCUMENT_COLUMNS[:3], "data": [row[:3] for row in rows] or [["", "", ""]]}


def upload_line(report: LoadReport) -> str:
    """`apps.common.report_line` with the page's own advice: a file already in the collection, or a PDF that
    needs a password, says which control to use (the command line's hint names a flag)."""
    if report.error and report.error.startswith(NEEDS_PASSWORD):
        return (f"- **{report.name}**: error: {NEEDS_PASSWORD}: type it in \"Password for encrypted PDFs\" and "
                "upload the file again")
    if report.ok and any(ALREADY_PRESENT in w for w in report.warnings):
        return (f"- **{report.name}**: already in this collection (same content), not added again. To read it "
                "again (after changing the passage size), select it under Documents and press Re-index.")
    return report_line(report)


def write_refusal(error: Exception) -> str:
    """Why a write to a collection was refused, in the page's words (rag's name the lock and the process id)."""
    if isinstance(error, CollectionDeletedError):
        return "the collection was deleted meanwhile (by another program using the same data folder); pick another."
    return ("another program (the command line, or another copy of this app) is changing this collection; try again "
            "when it is done.")


def question_problem(question: str, limits: Limits = LIMITS) -> str | None:
    """Why `question` cannot be asked (empty, or over `limits.question_chars`: refused whole, never cut), None if
    it can."""
    if not question.strip():
        return "Type a question first."
    if len(question.strip()) > limits.question_chars:
        return (f"The question is {len(question.strip())} characters long; the limit is {limits.question_chars}. "
                "Shorten it and ask again (it is still in the box).")
    return None


def stopped(messages: list[dict]) -> list[dict]:
    """The chat after Stop: the answer written so far marked as incomplete (a note of its own when no words came)."""
    messages = list(messages)
    if messages and messages[-1]["role"] == "assistant" and not messages[-1].get("metadata"):
        messages[-1] = assistant(f"{messages[-1]['content']}\n\n{STOPPED}")
    else:
        messages.append(assistant(STOPPED.replace("the answer above is incomplete", "no answer was written")))
    return messages


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
