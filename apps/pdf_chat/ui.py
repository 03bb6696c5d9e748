"""The PDF chat's web page: Gradio components wired to `PdfChat`'s handlers, and nothing else.

Gradio hands a chatbot's history back in its own shape and runs handlers on worker threads; the handlers
here only translate (`apps.common.plain_messages`, tables, timings) and call the app.

Asking is two steps: `take_question` moves the question out of the box into a new `Answering`, kept in a State (the
box is free for the next one while the answer streams; it is cleared once, never by the stream); then the answer
streams into the chat. While it does, Ask is disabled and reads "Answering…", and Enter leaves the new question in
the box with a line saying why. Stop marks the `Answering` stopped and shows what was written as incomplete; the
stream sees the mark before its next update, closes the app's generator (which stops the generation) and shows the
same. Not Gradio's `cancels=`: its cancel races the stream's updates (on 2 cores, updates went on arriving after
Stop, or the outputs showed "Error"); a browser that goes away still has Gradio close the generator, and the same
`finally` stops the generation. Deleting a document or a collection asks for a confirmation first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from apps.common import LIMITS, model_box_label, model_status, plain_messages
from apps.pdf_chat.app import (
    DEFAULT_COLLECTION,
    DOCUMENT_COLUMNS,
    SOURCE_COLUMNS,
    PdfChat,
    Settings,
    default_style,
    document_table,
    question_problem,
    source_rows,
    stopped,
)
from rag.answer import Source
from rag.collection import CHUNK_TOKENS_RANGE
from rag.loaders import SUFFIX_KINDS

PHONE_WIDTH = 768  # px: below, the columns stack: the chat, the page view, the library
CSS = f"""
.page-text mark {{ background: #ffe066; }}
.page-text {{ max-height: 70vh; overflow-y: auto; }}
#page-view details summary {{ cursor: pointer; margin: 0.5em 0; }}
@media (max-width: {PHONE_WIDTH}px) {{ #chat-column {{ order: -2; }} #page-column {{ order: -1; }} }}
"""
# The counter under the question box, in the browser (no request per key): the box has no maxlength, so a long
# paste is not cut silently; the counter says it is too long and Ask refuses it whole.
COUNT_JS = f"""(question) => {{
  const n = (question || "").length;
  return n > {LIMITS.question_chars} ? `${{n}} / {LIMITS.question_chars}: too long, shorten it before asking`
                                     : `${{n}} / {LIMITS.question_chars}`;
}}"""
# After a source's page is shown: bring the highlighted passage into view (the page column is below the fold on a
# phone, and the passage may be far down a long page): on the page image, else in the text.
SCROLL_JS = """() => { setTimeout(() => {
  const passage = document.querySelector('#page-view .page-passage') || document.querySelector('#page-view mark');
  if (passage) passage.scrollIntoView({block: 'center'});
}, 100); }"""
BUSY = "Still answering the last question: your new one stays in the box. Press Stop, or Ask when the answer is done."


@dataclass
class Answering:
    """One question and its answer in a session (in a gr.State: every handler of the session gets this object).
    Stop, New chat or another collection set `stop`, and the stream ends at its next update.

    Why the question travels in it: Gradio reads a State when a queued handler runs, not when it was triggered, so
    the answer step that follows a refused Ask (queued behind the running answer) may find a later question here;
    `begun` lets only one answer step answer it."""

    question: str
    started: float = field(default_factory=time.monotonic)
    begun: bool = False  # an answer step took it
    stop: str | None = None  # "stop": show what was written, marked incomplete; "discard": the chat was cleared
    done: bool = False  # the answer ended, or was stopped: a new question may be asked

    def end(self, why: str) -> None:
        if not self.done:
            self.stop, self.done = why, True


def idle() -> tuple:
    """The Ask button and the Stop button when no answer streams."""
    return gr.update(value="Ask", interactive=True), gr.update(interactive=False)


def documents_view(rows: list[list]):
    """The documents table for `PdfChat.documents`' rows, with column widths that fit its narrow column."""
    table = document_table(rows)
    widths = ["50%", "20%", "30%"] if len(table["headers"]) == 3 else ["40%", "16%", "20%", "24%"]
    return gr.update(value=table, column_widths=widths)


def take_question(question: str, history: list[dict], current: Answering | None) -> tuple:
    """The first step of Ask: the question leaves the box for a new `Answering` and shows in the chat, the buttons
    show the chat busy. A question that cannot be asked (empty, too long, or sent while an answer streams) stays in
    the box, adds nothing to the chat, and the status line says why.

    Returns (box, chat, status, Ask, Stop, answering)."""
    question = question or ""
    problem = BUSY if current is not None and not current.done else question_problem(question)
    if problem:
        return gr.skip(), gr.skip(), problem, gr.skip(), gr.skip(), gr.skip()
    shown = [*plain_messages(history), {"role": "user", "content": question.strip()}]
    return ("", shown, "Answering...", gr.update(value="Answering…", interactive=False), gr.update(interactive=True),
            Answering(question.strip()))


def stop(history: list[dict], current: Answering | None) -> tuple:
    """Stop: the chat as shown, its answer marked incomplete; the stream ends at its next update.

    Returns (chat, status, Ask, Stop)."""
    if current is None or current.done:  # it ended meanwhile
        return gr.skip(), gr.skip(), *idle()
    current.end("stop")
    return stopped(plain_messages(history)), f"Stopped after {time.monotonic() - current.started:.1f} s.", *idle()


def discard(current: Answering | None) -> None:
    """The chat is cleared (New chat, another collection): the answer streaming into it, if any, ends unseen."""
    if current is not None:
        current.end("discard")


def build_demo(app: PdfChat, collection: str = DEFAULT_COLLECTION) -> gr.Blocks:
    """The Gradio page over `app`; `collection` is selected when the page opens."""
    def collection_choices(selected: str | None):
        names = app.collections()
        return gr.update(choices=sorted(set(names) | ({selected} if selected else set())), value=selected)

    def library(name: str | None):
        """The documents table and the passage size of collection `name`."""
        return documents_view(app.documents(name or "")), app.chunk_tokens(name or "")

    progress_bar = gr.Progress()  # Gradio fills in a handler's argument whose default is a Progress

    def on_upload(name: str, files, password: str, progress=progress_bar):
        paths = [f if isinstance(f, str) else f.name for f in (files or [])]  # Gradio's temp copies: deleted
        if not name:
            for path in paths:
                Path(path).unlink(missing_ok=True)
            return "Create a collection first: press New collection.", gr.update(), gr.update()
        existed = app.open_collections.exists(name)
        report = app.upload(name, paths, lambda fraction, what: progress(fraction, desc=what), delete_inputs=True,
                            password=password)
        if not app.open_collections.exists(name):  # not created: nothing was added, or too many collections
            return report, gr.update(), gr.update()
        # The dropdown is updated only for a collection this upload created: setting its value fires its change
        # event, which reloads the library (and the passage size a user may be typing meanwhile).
        return report, documents_view(app.documents(name)), gr.update() if existed else collection_choices(name)

    def on_collection(name: str | None, current: Answering | None):
        discard(current)
        table, tokens = library(name)
        return table, tokens, [], [], "", [], "", gr.update(visible=False), *idle()

    def on_create(name: str):
        report = app.create_collection(name)
        if not report.startswith("Created"):
            return report, gr.skip(), gr.skip(), gr.skip()
        name = name.strip()
        return report, collection_choices(name), gr.update(visible=False), ""

    def on_delete_collection(name: str | None):
        if not name or not app.open_collections.exists(name):
            return f"There is no collection {name or ''!r} to delete.", gr.update(visible=False), ""
        count = len(app.documents(name))
        return "", gr.update(visible=True), (f"Delete the collection **{name}** and its {count} "
                                             f"document{'s' if count != 1 else ''}? This cannot be undone.")

    def on_confirm_delete_collection(name: str):
        report = app.delete_collection(name)
        if not report.startswith("Deleted"):
            return report, gr.update(visible=False), gr.skip()
        remaining = app.collections()
        return report, gr.update(visible=False), collection_choices(remaining[0] if remaining else None)

    def on_remove(name: str, file_name: str):
        if not file_name:
            return "Select a document in the table first.", gr.update(visible=False), "", None
        return "", gr.update(visible=True), f"Delete **{file_name}** from **{name}**?", file_name

    def on_confirm_remove(name: str, file_name: str):
        return (app.remove(name, file_name), documents_view(app.documents(name)), gr.update(visible=False), "",
                "<p>Click a source to see its page here.</p>")

    def on_reindex(name: str, file_name: str, password: str):
        if not file_name:
            return "Select a document in the table first.", gr.skip()
        return app.reindex(name, file_name, password), documents_view(app.documents(name))

    def on_document_select(event: gr.SelectData):
        return event.row_value[0]  # the file name

    def on_ask(answering: Answering | None, history: list[dict], name: str, temperature: float, k: int,
               hybrid: bool, agent_mode: bool, style: str):
        """Stream the answer; returns (chat, sources table, sources, status, Ask, Stop) at each update."""
        if answering is None or answering.begun:  # take_question refused this Ask; its question is being answered
            yield (gr.skip(),) * 6  # (a generator that yields nothing would clear the outputs)
            return
        answering.begun = True
        shown = messages = plain_messages(history)  # ends with the question, shown by take_question
        settings = Settings(name, temperature, int(k), hybrid, agent_mode, style)
        first = None
        replies = app.ask(answering.question, shown[:-1], settings)
        try:
            for reply in replies:
                if answering.stop:
                    break
                first = first or time.monotonic() - answering.started
                messages = [*shown, *reply.messages]
                yield messages, source_rows(reply.sources), reply.sources, gr.skip(), gr.skip(), gr.skip()
        except Exception:
            yield gr.skip(), gr.skip(), gr.skip(), "The answer failed.", *idle()
            raise
        finally:
            replies.close()  # stops the generation, also when Gradio closes this generator (the browser left)
            answering.end("done")
        took = time.monotonic() - answering.started
        if answering.stop == "stop":  # the last update, whichever of Stop's and this one comes last
            yield stopped(messages), gr.skip(), gr.skip(), f"Stopped after {took:.1f} s.", *idle()
        elif answering.stop != "discard":
            yield (gr.skip(), gr.skip(), gr.skip(),
                   f"Answered in {took:.1f} s (first words after {first or took:.1f} s).", *idle())

    def on_new_chat(current: Answering | None):
        discard(current)
        return [], [], [], "", "", *idle()

    def on_source_select(sources: list[Source], name: str, event: gr.SelectData):
        if not sources:
            return ""
        return app.page_view(name, sources[event.index[0]])

    low, high = CHUNK_TOKENS_RANGE
    with gr.Blocks(title="llmkit: chat with your PDFs") as demo:
        gr.Markdown("## Chat with your PDFs\nAnswers come from your documents only, with the file and page "
                    "they used. Everything runs on this computer.")
        sources_state, pending_removal = gr.State([]), gr.State(None)
        answering = gr.State(None)  # the session's latest Answering
        with gr.Row(elem_id="layout"):
            with gr.Column(scale=1, min_width=300, elem_id="library"):
                collection_box = gr.Dropdown(label="Collection", choices=app.collections() or [collection],
                                             value=collection, allow_custom_value=False, elem_id="collection")
                with gr.Row():
                    new_collection = gr.Button("New collection", size="sm", min_width=80, elem_id="new-collection")
                    delete_collection = gr.Button("Delete collection", size="sm", variant="stop", min_width=80,
                                                  elem_id="delete-collection")
                with gr.Column(visible=False, elem_id="new-collection-form") as new_collection_form:
                    new_name = gr.Textbox(label="Name of the new collection", elem_id="new-collection-name",
                                          placeholder="letters, digits, - or _ (up to 64)")
                    with gr.Row():
                        create = gr.Button("Create", size="sm", variant="primary", min_width=80,
                                           elem_id="create-collection")
                        cancel_create = gr.Button("Cancel", size="sm", min_width=80)
                with gr.Column(visible=False, elem_id="confirm-collection") as confirm_collection_form:
                    confirm_collection_text = gr.Markdown()
                    with gr.Row():
                        confirm_collection = gr.Button("Delete it", size="sm", variant="stop", min_width=80,
                                                       elem_id="confirm-delete-collection")
                        cancel_collection = gr.Button("Cancel", size="sm", min_width=80,
                                                      elem_id="cancel-delete-collection")
                files = gr.File(label=f"Upload PDF, txt or md (up to {LIMITS.upload_mb} MB each)",
                                file_count="multiple", file_types=sorted(SUFFIX_KINDS), elem_id="upload")
                password = gr.Textbox(label="Password for encrypted PDFs (if any)", type="password",
                                      elem_id="pdf-password")
                upload_report = gr.Markdown(elem_id="upload-report")
                documents = gr.Dataframe(headers=DOCUMENT_COLUMNS[:3], interactive=False, wrap=True,
                                         label="Documents (click one to select it)", elem_id="documents")
                selected_document = gr.Textbox(label="Selected document", interactive=False,
                                               elem_id="selected-document")
                with gr.Row():
                    remove_button = gr.Button("Delete", variant="stop", size="sm", min_width=80,
                                              elem_id="delete-document")
                    reindex_button = gr.Button("Re-index", size="sm", min_width=80, elem_id="reindex")
                with gr.Column(visible=False, elem_id="confirm-document") as confirm_remove_form:
                    confirm_remove_text = gr.Markdown()
                    with gr.Row():
                        confirm_remove = gr.Button("Delete it", size="sm", variant="stop", min_width=80,
                                                   elem_id="confirm-delete-document")
                        cancel_remove = gr.Button("Cancel", size="sm", min_width=80, elem_id="cancel-delete-document")
                with gr.Accordion("Settings", open=False, elem_id="settings"):
                    temperature = gr.Slider(0, 1.5, value=0.0, step=0.05, label="Temperature (0 = deterministic)")
                    top_k = gr.Slider(1, 10, value=5, step=1, label="Passages retrieved")
                    hybrid = gr.Checkbox(value=True, label="Hybrid search (meaning + keywords)")
                    style = gr.Radio([("Quotes from the documents, chosen by the model", "grounded"),
                                      ("Written by the model (for large models)", "free")],
                                     value=default_style(app.llm), label="Answers", elem_id="answer-style")
                    agent_mode = gr.Checkbox(value=False, label="Agent mode (the model searches and reads pages)")
                    passage_size = gr.Number(value=app.chunk_tokens(collection), precision=0,
                                             label=f"Passage size (tokens) of this collection, {low} to {high}",
                                             elem_id="passage-size")
                    set_passage_size = gr.Button("Use this passage size", size="sm", elem_id="set-passage-size")
                    passage_status = gr.Markdown(elem_id="passage-size-status")
                    model_line = gr.Markdown(model_status(app.llm), elem_id="model-status")
                    if app.model_switch.allowed:  # else the model is shown, not changeable: it is every session's
                        model_box = gr.Textbox(label=model_box_label(app.model_switch), elem_id="model")
                        load_model = gr.Button("Load model", size="sm")
                        load_model.click(app.set_model, model_box, model_line)
            with gr.Column(scale=2, elem_id="chat-column"):
                chatbot = gr.Chatbot(label="Chat", height=420, elem_id="chat")
                question = gr.Textbox(label="Question", placeholder="Ask about your documents", elem_id="question")
                counter = gr.Markdown(f"0 / {LIMITS.question_chars}", elem_id="question-count")
                with gr.Row():
                    ask_button = gr.Button("Ask", variant="primary", min_width=80, elem_id="ask")
                    stop_button = gr.Button("Stop", variant="stop", interactive=False, min_width=80, elem_id="stop")
                    new_chat = gr.Button("New chat", min_width=80, elem_id="new-chat")
                answer_status = gr.Markdown(elem_id="answer-status")
                sources_table = gr.Dataframe(headers=SOURCE_COLUMNS, interactive=False, wrap=True, max_height=320,
                                             column_widths=["6%", "23%", "11%", "17%", "43%"],
                                             label="Sources (click one to see its page)", elem_id="sources")
            with gr.Column(scale=1, min_width=300, elem_id="page-column"):
                page = gr.HTML("<p>Click a source to see its page here.</p>", elem_id="page-view")

        # On every page load, not when the page is built: another tab or a restart may have changed them.
        demo.load(lambda name: (*library(name), collection_choices(name)), collection_box,
                  [documents, passage_size, collection_box])
        files.upload(on_upload, [collection_box, files, password], [upload_report, documents, collection_box])

        new_collection.click(lambda: (gr.update(visible=True), gr.update(visible=False)), None,
                             [new_collection_form, confirm_collection_form])
        cancel_create.click(lambda: (gr.update(visible=False), ""), None, [new_collection_form, new_name])
        gr.on([create.click, new_name.submit], on_create, new_name,
              [upload_report, collection_box, new_collection_form, new_name])
        delete_collection.click(on_delete_collection, collection_box,
                                [upload_report, confirm_collection_form, confirm_collection_text])
        cancel_collection.click(lambda: gr.update(visible=False), None, confirm_collection_form)
        confirm_collection.click(on_confirm_delete_collection, collection_box,
                                 [upload_report, confirm_collection_form, collection_box])

        documents.select(on_document_select, None, selected_document)
        remove_button.click(on_remove, [collection_box, selected_document],
                            [upload_report, confirm_remove_form, confirm_remove_text, pending_removal])
        cancel_remove.click(lambda: gr.update(visible=False), None, confirm_remove_form)
        confirm_remove.click(on_confirm_remove, [collection_box, pending_removal],
                             [upload_report, documents, confirm_remove_form, selected_document, page])
        reindex_button.click(on_reindex, [collection_box, selected_document, password], [upload_report, documents])
        set_passage_size.click(app.set_chunk_tokens, [collection_box, passage_size], passage_status)

        question.change(None, question, counter, js=COUNT_JS, show_progress="hidden", queue=False)
        buttons = [ask_button, stop_button]
        gr.on([ask_button.click, question.submit], take_question, [question, chatbot, answering],
              [question, chatbot, answer_status, *buttons, answering]).then(
            on_ask, [answering, chatbot, collection_box, temperature, top_k, hybrid, agent_mode, style],
            [chatbot, sources_table, sources_state, answer_status, *buttons])
        stop_button.click(stop, [chatbot, answering], [chatbot, answer_status, *buttons])
        new_chat.click(on_new_chat, answering, [chatbot, sources_table, sources_state, page, answer_status, *buttons])
        collection_box.change(on_collection, [collection_box, answering],
                              [documents, passage_size, chatbot, sources_table, page, sources_state, selected_document,
                               confirm_remove_form, *buttons])
        sources_table.select(on_source_select, [sources_state, collection_box], page)
        page.change(None, None, None, js=SCROLL_JS, show_progress="hidden", queue=False)
    return demo
