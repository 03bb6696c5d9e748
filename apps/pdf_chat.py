"""Chat with PDFs in the browser: upload into named collections, streamed answers with checked page citations.

`PdfChat` holds what every browser session shares (the data dir, the embedder, the model, open
collections) and its methods are the handlers, written over domain objects so tests call them without
a server; `build_demo` only wires them to Gradio components. Collections live under the data dir
(`--data-dir`, env LLMKIT_HOME) and persist across restarts; uploaded files are copied into their
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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import gradio as gr

from core import LLM, ModelLoadError, load, settings
from rag import Collection, Retriever, collection_names, stream_answer
from rag.answer import Source
from rag.collection import check_name
from rag.embeddings import Embedder, SentenceTransformerEmbedder
from rag.loaders import SUFFIX_KINDS

MAX_UPLOAD_MB = 50
MAX_FILES_PER_UPLOAD = 20
MAX_QUESTION_CHARS = 2000
MAX_HISTORY_TURNS = 3  # earlier question/answer pairs sent with a question (the prompt drops more if needed)
SUMMARY_CHARS = 6000  # of a document's first pages that the summarise tool reads
DEFAULT_COLLECTION = "sample"
SAMPLE_PDF = Path(__file__).resolve().parents[1] / "data/pdfs/demo/nist-sp800-90b-entropy-suite-user-guide.pdf"
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
    def __init__(self, data_dir: str | Path | None = None, llm: LLM | None = None, embedder: Embedder | None = None,
                 agent_model=None):
        """Loads the embedder and the model now (once), not on the first question.

        `agent_model`: the core.ChatModel of agent mode; default: `llm`. Either runs at the chat's temperature.
        """
        self.data_dir = Path(data_dir or settings.data_dir())
        self.embedder = embedder or SentenceTransformerEmbedder()
        self.llm = llm or load()
        self.agent_model = agent_model
        self._collections: dict[str, tuple[Collection, Retriever, threading.Lock]] = {}
        self._open_lock = threading.Lock()

    def set_model(self, spec: str) -> str:
        """Switch the model every chat uses (see `core.load`); on failure keep the current one and say why."""
        try:
            self.llm = load(spec)
        except (ModelLoadError, ValueError, ConnectionError, OSError) as error:
            return f"Could not load {spec!r}: {error}. Still using `{self.llm.name}`."
        return f"Model: `{self.llm.name}`."

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
        if len(paths) > MAX_FILES_PER_UPLOAD:
            return f"**Too many files:** {len(paths)} at once; the limit is {MAX_FILES_PER_UPLOAD} per upload."
        lines, accepted = [], []
        for path in map(Path, paths):
            size_mb = path.stat().st_size / 2**20 if path.is_file() else 0
            if path.suffix.lower() not in SUFFIX_KINDS:
                lines.append(f"- **{path.name}**: error: unsupported type; upload {', '.join(sorted(SUFFIX_KINDS))}")
            elif size_mb > MAX_UPLOAD_MB:
                lines.append(f"- **{path.name}**: error: {size_mb:.0f} MB; the limit is {MAX_UPLOAD_MB} MB per file")
            else:
                accepted.append(path)
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

        with lock:
            reports = collection.add_files(kept, progress=on_progress)
        for report, copy in zip(reports, kept, strict=True):
            if copy in new_copies and not collection.store.has_document(report.content_hash or ""):
                shutil.rmtree(copy.parent, ignore_errors=True)  # the file was refused
            lines.append(_report_line(report))
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
            removed = collection.remove(file_name)
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
            report = collection.replace(record.path)
        return _report_line(report)

    # --- questions ------------------------------------------------------------------------------------------------

    def ask(self, question: str, history: list[dict], settings: Settings) -> Iterator[Reply]:
        """The answer to `question`, streamed: each Reply holds the assistant messages so far.

        `history`: the chat's earlier {"role", "content"} messages (tool steps included; only plain
        turns go to the model). Problems the user can fix come back as the answer's text.
        """
        question = question.strip()
        if not question:
            yield Reply([_assistant("Type a question first.")])
            return
        if len(question) > MAX_QUESTION_CHARS:
            yield Reply([_assistant(f"The question is {len(question)} characters long; the limit is "
                                    f"{MAX_QUESTION_CHARS}. Shorten it and ask again.")])
            return
        collection, retriever, lock = self._open(settings.collection)
        if not collection.documents():
            yield Reply([_assistant(f"The collection {settings.collection!r} has no documents yet: upload a PDF "
                                    "first.")])
            return
        turns = [m for m in history if m["role"] in ("user", "assistant") and not m.get("metadata")]
        turns = turns[-2 * MAX_HISTORY_TURNS:]
        if settings.agent_mode:
            yield from self._ask_agent(question, turns, settings, collection, retriever, lock)
            return
        try:
            with lock:
                stream = stream_answer(retriever, self.llm, question, k=settings.k,
                                       mode="hybrid" if settings.hybrid else "dense",
                                       history=turns, temperature=settings.temperature)
        except ValueError as error:  # the question and its sources do not fit this model's context
            yield Reply([_assistant(f"Cannot answer with this model: {error}.")])
            return
        text = ""
        for delta in stream:
            text += delta
            yield Reply([_assistant(text)], stream.sources)
        result = stream.answer
        final = result.text
        if result.invalid_citations:
            dropped = ", ".join(result.invalid_citations)
            final += f"\n\n_(removed citations of pages that were not retrieved: {dropped})_"
        if result.finish_reason == "length":
            final += "\n\n_(cut off at the answer length limit)_"
        yield Reply([_assistant(final)], result.sources)

    def _ask_agent(self, question: str, turns: list[dict], settings: Settings, collection: Collection,
                   retriever: Retriever, lock: threading.Lock) -> Iterator[Reply]:
        """The question goes to an agent with the collection's tools, after the chat's earlier `turns`; each step
        shows as it happens."""
        from agents import Agent, rag_tools

        tools = [*(_locked(t, lock) for t in rag_tools(collection, settings.k, retriever)),
                 self._summary_tool(collection, lock)]
        agent = Agent(self.agent_model or self.llm, tools, instructions=AGENT_INSTRUCTIONS, max_steps=6,
                      sampling={"temperature": settings.temperature})
        messages: list[dict] = []
        for step in agent.stream(question, history=turns):
            if step.answer is not None:
                messages.append(_assistant(step.answer))
            else:
                title = f"🔧 {step.tool}({_arguments(step.arguments)})" if step.tool else "⚠️ invalid step"
                body = step.error.message if step.error else (step.observation or "")
                messages.append({"role": "assistant", "content": body[:1500], "metadata": {"title": title}})
            yield Reply(list(messages))
        if not any(m.get("metadata") is None for m in messages):
            messages.append(_assistant("The agent stopped before it found an answer (step limit reached)."))
            yield Reply(list(messages))

    def _summary_tool(self, collection: Collection, lock: threading.Lock):
        from agents import tool

        @tool
        def summarize_document(document: str) -> str:
            """Summarise one document in a few sentences, from its first pages.

            Args:
                document: the document's file name, as list_documents or search_documents show it
            """
            with lock:
                record = collection.find(document)
                if record is None:
                    names = ", ".join(d.file_name for d in collection.documents())
                    raise ValueError(f"no document {document!r}; the documents are: {names}")
                text = ""
                for number in range(1, record.pages_total + 1):
                    text += collection.page_text(record.doc_id, number) + "\n"
                    if len(text) >= SUMMARY_CHARS:
                        break
            prompt = [{"role": "user", "content": f"Summarise this document in three sentences.\n\n"
                                                  f"{text[:SUMMARY_CHARS]}"}]
            return self.llm.generate(prompt, max_new_tokens=160, temperature=0.0, repetition_penalty=1.1)

        return summarize_document

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


def plain_messages(history: list[dict]) -> list[dict]:
    """The chat as Gradio hands it back ({"role", "content": [{"type": "text", "text"}], "metadata", ...}) as
    {"role", "content": str} messages, metadata kept where there is some."""
    messages = []
    for message in history or []:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        plain = {"role": message["role"], "content": content if isinstance(content, str) else ""}
        if message.get("metadata"):
            plain["metadata"] = message["metadata"]
        messages.append(plain)
    return messages


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _arguments(arguments: dict | None) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in (arguments or {}).items())


def _locked(tool_, lock: threading.Lock):
    """The tool, calling its function under the collection's lock."""
    def call(*args, **kwargs):
        with lock:
            return tool_.function(*args, **kwargs)

    return replace(tool_, function=call)


def _report_line(report) -> str:
    if report.error:
        return f"- **{report.name}**: error: {report.error}"
    ocr = f"; pages {', '.join(map(str, report.pages_needing_ocr))} need OCR" if report.pages_needing_ocr else ""
    notes = "".join(f"\n  - {w}" for w in report.warnings)
    return f"- **{report.name}**: added, {report.pages_with_text} of {report.pages_total} pages with text{ocr}{notes}"


def source_rows(sources: list[Source]) -> list[list]:
    return [[s.number, s.file, s.page, round(s.score, 4), " ".join(s.text.split())[:160]] for s in sources]



# --- the web page ---------------------------------------------------------------------------------------------------

CSS = ".page-text mark { background: #ffe066; }"


def build_demo(app: PdfChat, collection: str = DEFAULT_COLLECTION) -> gr.Blocks:
    """The Gradio page over `app`; `collection` is selected when the page opens."""
    def collection_choices(selected: str):
        names = app.collections()
        return gr.update(choices=sorted(set(names) | {selected}), value=selected)

    progress_bar = gr.Progress()  # Gradio fills in a handler's argument whose default is a Progress

    def on_upload(name: str, files, progress=progress_bar):
        name = (name or "").strip()
        try:
            check_name(name)
        except ValueError as error:
            return str(error), gr.update(), gr.update()
        paths = [f if isinstance(f, str) else f.name for f in (files or [])]
        report = app.upload(name, paths, lambda fraction, what: progress(fraction, desc=what))
        return report, app.documents(name), collection_choices(name)

    def on_collection(name: str):
        return app.documents(name), [], [], "", None

    def on_remove(name: str, file_name: str):
        if not file_name:
            return "Select a document in the table first.", app.documents(name)
        return app.remove(name, file_name), app.documents(name)

    def on_reindex(name: str, file_name: str):
        if not file_name:
            return "Select a document in the table first.", app.documents(name)
        return app.reindex(name, file_name), app.documents(name)

    def on_document_select(event: gr.SelectData):
        return event.row_value[0]  # the file name

    def on_ask(question: str, history: list[dict], name: str, temperature: float, k: int, hybrid: bool,
               agent_mode: bool):
        history = plain_messages(history)
        settings = Settings(name, temperature, int(k), hybrid, agent_mode)
        shown = [*history, {"role": "user", "content": question}]
        started, first = time.monotonic(), None
        yield shown, "", [], [], "Answering..."
        for reply in app.ask(question, history, settings):
            first = first or time.monotonic() - started
            yield [*shown, *reply.messages], "", source_rows(reply.sources), reply.sources, "Answering..."
        done = time.monotonic() - started
        yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"Answered in {done:.1f} s (first words after {first:.1f} s)."

    def on_source_select(sources: list[Source], name: str, event: gr.SelectData):
        if not sources:
            return ""
        return app.page_view(name, sources[event.index[0]])

    with gr.Blocks(title="llmkit: chat with your PDFs") as demo:
        gr.Markdown("## Chat with your PDFs\nAnswers come from your documents only, with the file and page "
                    "they used. Everything runs on this computer.")
        sources_state = gr.State([])
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                collection_box = gr.Dropdown(label="Collection", choices=app.collections() or [collection],
                                             value=collection, allow_custom_value=True, elem_id="collection")
                files = gr.File(label=f"Upload PDF, txt or md (up to {MAX_UPLOAD_MB} MB each)", file_count="multiple",
                                file_types=sorted(SUFFIX_KINDS), elem_id="upload")
                upload_report = gr.Markdown(elem_id="upload-report")
                documents = gr.Dataframe(headers=["file", "pages", "chunks", "needs OCR", "added"],
                                         interactive=False, label="Documents",
                                         elem_id="documents")
                selected_document = gr.Textbox(label="Selected document", interactive=False,
                                               elem_id="selected-document")
                with gr.Row():
                    remove_button = gr.Button("Delete", variant="stop", size="sm")
                    reindex_button = gr.Button("Re-index", size="sm")
                with gr.Accordion("Settings", open=False):
                    temperature = gr.Slider(0, 1.5, value=0.0, step=0.05, label="Temperature (0 = deterministic)")
                    top_k = gr.Slider(1, 10, value=5, step=1, label="Passages retrieved")
                    hybrid = gr.Checkbox(value=True, label="Hybrid search (meaning + keywords)")
                    agent_mode = gr.Checkbox(value=False, label="Agent mode (the model searches and reads pages)")
                    model_box = gr.Textbox(label="Model: empty for the embedded one, a .gguf path, a checkpoint "
                                           "directory, a Hugging Face id, or an OpenAI-compatible URL (…/v1)",
                                           elem_id="model")
                    load_model = gr.Button("Load model", size="sm")
                    model_status = gr.Markdown(f"Model: `{app.llm.name}`.", elem_id="model-status")
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="Chat", height=420, elem_id="chat")
                question = gr.Textbox(label="Question", placeholder="Ask about your documents",
                                      max_length=MAX_QUESTION_CHARS, elem_id="question")
                with gr.Row():
                    ask_button = gr.Button("Ask", variant="primary", elem_id="ask")
                    new_chat = gr.Button("New chat", elem_id="new-chat")
                answer_status = gr.Markdown(elem_id="answer-status")
                sources_table = gr.Dataframe(headers=SOURCE_COLUMNS, interactive=False, wrap=True, max_height=320,
                                             column_widths=["6%", "30%", "8%", "10%", "46%"],
                                             label="Sources (click one to see its page)", elem_id="sources")
            with gr.Column(scale=1, min_width=300):
                page = gr.HTML("<p>Click a source to see its page here.</p>", elem_id="page-view")

        # On every page load, not when the page is built: another tab or a restart may have changed them.
        demo.load(lambda name: (app.documents(name), collection_choices(name)), collection_box,
                  [documents, collection_box])
        files.upload(on_upload, [collection_box, files], [upload_report, documents, collection_box])
        collection_box.change(on_collection, collection_box, [documents, chatbot, sources_table, page, sources_state])
        documents.select(on_document_select, None, selected_document)
        remove_button.click(on_remove, [collection_box, selected_document], [upload_report, documents])
        reindex_button.click(on_reindex, [collection_box, selected_document], [upload_report, documents])
        ask_inputs = [question, chatbot, collection_box, temperature, top_k, hybrid, agent_mode]
        ask_outputs = [chatbot, question, sources_table, sources_state, answer_status]
        question.submit(on_ask, ask_inputs, ask_outputs)
        ask_button.click(on_ask, ask_inputs, ask_outputs)
        new_chat.click(lambda: ([], [], [], "", ""), None, [chatbot, sources_table, sources_state, page, answer_status])
        load_model.click(app.set_model, model_box, model_status)
        sources_table.select(on_source_select, [sources_state, collection_box], page)
    demo.css = CSS
    return demo


def main(host: str = "127.0.0.1", port: int = 7860, collection: str = DEFAULT_COLLECTION,
         data_dir: str | None = None, model: str | None = None, model_name: str | None = None,
         api_key: str | None = None, dtype: str = "float32") -> None:
    """Load everything once, make sure the sample is indexed, serve until Ctrl-C; the model as `core.load` takes it."""
    print("Loading the models...", flush=True)
    app = PdfChat(data_dir, llm=load(model, dtype=dtype, model_name=model_name, api_key=api_key))
    app.ensure_sample()
    build_demo(app, collection).queue().launch(server_name=host, server_port=port, show_error=True)
