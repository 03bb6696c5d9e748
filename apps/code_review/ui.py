"""The code-review page: Gradio components wired to `CodeReviewApp`'s handlers.

Two tabs. Review: paste code or a diff, upload files, or give a local folder (and a revision range) -> the
findings table (severity, place, tool and rule, the tool's message, the model's explanation) and the Markdown
report. Debug: a local project -> its suspicious lines, highlighted in the code, and the verified patches with
their diffs and the tests they made pass. The page opens on an example with known issues. Refused input raises a
Gradio warning and leaves its reason in the status line; nothing shows a trace.
"""

from __future__ import annotations

import gradio as gr

from apps.code_review.app import (
    DEBUG_CANDIDATES,
    DEBUG_SECONDS,
    SUSPICIOUS_HEADERS,
    TABLE_HEADERS,
    AppError,
    CodeReviewApp,
)
from apps.code_review.inputs import MAX_FILE_BYTES

CSS = """
#findings table td { white-space: normal; }
.cr-file { font-family: ui-monospace, monospace; font-size: 0.9em; margin-bottom: 1em; }
.cr-name { font-weight: 600; margin: 0 0 0.3em 0; }
.cr-line { white-space: pre; padding: 0 4px; overflow-x: auto; }
.cr-no { display: inline-block; width: 3.5em; color: #6b7280; user-select: none; }
.cr-suspicious { font-weight: 600; }
.cr-gap { color: #9ca3af; padding-left: 4px; }
"""
EXAMPLE = '''import os
import subprocess


def run(command):
    return subprocess.call(command, shell=True)


def average(values=[]):
    if not values:
        return 0
    return sum(values) / len(value)
'''


def build_demo(app: CodeReviewApp) -> gr.Blocks:
    """The Gradio page over `app`."""

    def refused(error: AppError, count: int):
        gr.Warning(str(error))
        return (f"**{error}**", *(gr.skip(),) * count)

    def shown(view):
        return view.status, view.rows, view.report

    def on_text(text, path, all_lines):
        try:
            return shown(app.review_text(text, path, all_lines))
        except AppError as error:
            return refused(error, 2)

    def on_upload(files, path, all_lines):
        try:
            return shown(app.review_uploads(files, path, all_lines))
        except AppError as error:
            return refused(error, 2)

    def on_path(path, revisions, all_lines):
        try:
            return shown(app.review_path(path, revisions, all_lines))
        except AppError as error:
            return refused(error, 2)

    def on_debug(path, max_candidates, max_seconds):
        try:
            view = app.debug(path, max_candidates, max_seconds)
        except AppError as error:
            return refused(error, 3)
        return view.status, view.suspicious, view.code_html, view.patches

    with gr.Blocks(title="llmkit: code review") as demo:
        gr.Markdown("## Code review and debugging, grounded in tools\nEvery comment comes from an analyzer (ruff, "
                    "bandit, radon) and names its tool and rule; the model only chooses how to explain it. The "
                    f"debugger proposes only patches the project's tests accepted. {app.model_line}")
        status = gr.Markdown(elem_id="status")
        with gr.Tab("Review", elem_id="review-tab"), gr.Row():
            with gr.Column(scale=2, min_width=320):
                with gr.Tab("Paste", elem_id="paste-tab"):
                    code = gr.Code(value=EXAMPLE, language="python", lines=14, max_lines=30,
                                   label=f"Python code or a unified diff (up to {MAX_FILE_BYTES // 1000:,} KB)",
                                   elem_id="code")
                    review_text = gr.Button("Review", variant="primary", elem_id="review-text")
                with gr.Tab("Upload", elem_id="upload-tab"):
                    files = gr.File(file_count="multiple", file_types=[".py", ".pyi", ".diff", ".patch"],
                                    label="Python files, or one diff", elem_id="files")
                    review_files = gr.Button("Review the files", variant="primary", elem_id="review-files")
                with gr.Tab("Local folder", elem_id="path-tab"):
                    revisions = gr.Textbox(label="Revision range (optional: A..B, A...B or A)", max_length=200,
                                           elem_id="revisions")
                    review_path = gr.Button("Review the folder", variant="primary", elem_id="review-path")
                path = gr.Textbox(label="Local folder (a repository; a pasted or uploaded diff is read "
                                  "against it)", value=str(app.roots[0]), max_length=1000, elem_id="path")
                all_lines = gr.Checkbox(label="on a diff or range, every line of the changed files",
                                        elem_id="all-lines")
            with gr.Column(scale=4, min_width=320):
                findings = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, wrap=True, max_height=1400,
                                        column_widths=["10%", "11%", "6%", "8%", "8%", "25%", "32%"],
                                        elem_id="findings")
                with gr.Accordion("Report (Markdown)", open=False):
                    report = gr.Markdown(elem_id="report")
        with gr.Tab("Debug", elem_id="debug-tab"):
            gr.Markdown(f"Runs the project's tests (`{app.test_cmd}`) in a sandboxed copy, ranks the lines the "
                        "failing tests point at, and tries candidate patches there: only those that make the "
                        "failing tests pass without breaking a passing one are shown. The project is not changed.")
            with gr.Row():
                project = gr.Textbox(label="Project folder", value=str(app.roots[0]), max_length=1000, scale=3,
                                     elem_id="project")
                max_candidates = gr.Number(value=DEBUG_CANDIDATES, precision=0, minimum=1, maximum=1000,
                                           label="Candidates (at most)", elem_id="max-candidates")
                max_seconds = gr.Number(value=DEBUG_SECONDS, minimum=5, maximum=1800, label="Seconds (at most)",
                                        elem_id="max-seconds")
            debug_button = gr.Button("Debug", variant="primary", elem_id="debug")
            with gr.Row():
                with gr.Column(scale=2, min_width=320):
                    suspicious = gr.Dataframe(headers=SUSPICIOUS_HEADERS, interactive=False, max_height=360,
                                              elem_id="suspicious")
                    code_view = gr.HTML(elem_id="code-view")
                with gr.Column(scale=3, min_width=320):
                    patches = gr.Markdown(elem_id="patches")

        outputs = [status, findings, report]
        gr.on([demo.load, review_text.click], on_text, [code, path, all_lines], outputs)
        review_files.click(on_upload, [files, path, all_lines], outputs)
        review_path.click(on_path, [path, revisions, all_lines], outputs)
        debug_button.click(on_debug, [project, max_candidates, max_seconds], [status, suspicious, code_view, patches])
    return demo
