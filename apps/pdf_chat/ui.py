"""The PDF chat's web page: Gradio components wired to `PdfChat`'s handlers, and nothing else.

Gradio hands a chatbot's history back in its own shape and runs handlers on worker threads; the handlers
here only translate (`apps.common.plain_messages`, tables, timings) and call the app.
"""

from __future__ import annotations

import time

import gradio as gr

from apps.common import LIMITS, model_box_label, model_status, plain_messages
from apps.pdf_chat.app import DEFAULT_COLLECTION, SOURCE_COLUMNS, PdfChat, Settings, source_rows
from rag.answer import Source
from rag.loaders import SUFFIX_KINDS

CSS = ".page-text mark { background: #ffe066; }"


def build_demo(app: PdfChat, collection: str = DEFAULT_COLLECTION) -> gr.Blocks:
    """The Gradio page over `app`; `collection` is selected when the page opens."""
    def collection_choices(selected: str):
        names = app.collections()
        return gr.update(choices=sorted(set(names) | {selected}), value=selected)

    progress_bar = gr.Progress()  # Gradio fills in a handler's argument whose default is a Progress

    def on_upload(name: str, files, progress=progress_bar):
        name = (name or "").strip()
        paths = [f if isinstance(f, str) else f.name for f in (files or [])]  # Gradio's temp copies: deleted
        report = app.upload(name, paths, lambda fraction, what: progress(fraction, desc=what), delete_inputs=True)
        if not app.open_collections.exists(name):  # not created: an invalid name, or too many collections
            return report, gr.update(), gr.update()
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
                files = gr.File(label=f"Upload PDF, txt or md (up to {LIMITS.upload_mb} MB each)",
                                file_count="multiple", file_types=sorted(SUFFIX_KINDS), elem_id="upload")
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
                    model_line = gr.Markdown(model_status(app.llm), elem_id="model-status")
                    if app.model_switch.allowed:  # else the model is shown, not changeable: it is every session's
                        model_box = gr.Textbox(label=model_box_label(app.model_switch), elem_id="model")
                        load_model = gr.Button("Load model", size="sm")
                        load_model.click(app.set_model, model_box, model_line)
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="Chat", height=420, elem_id="chat")
                question = gr.Textbox(label="Question", placeholder="Ask about your documents",
                                      max_length=LIMITS.question_chars, elem_id="question")
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
        sources_table.select(on_source_select, [sources_state, collection_box], page)
    demo.css = CSS
    return demo

