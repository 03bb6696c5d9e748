"""`llmkit pdf-chat`: its flags, its settings, and start-up (load the models once, index the sample, serve).

Imported by the CLI to build its parser, so gradio is imported only when the command runs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from apps.common import AppSettings, add_app_flags, launch_kwargs
from apps.pdf_chat.app import DEFAULT_COLLECTION, PdfChat

PORT = 7860


@dataclass
class PdfChatSettings(AppSettings):
    port: int = PORT
    collection: str = DEFAULT_COLLECTION  # selected when the page opens


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_app_flags(parser, port=PORT)
    parser.add_argument("--collection", default=DEFAULT_COLLECTION, help="the collection selected when the page opens")


def run(args: argparse.Namespace) -> None:
    serve(PdfChatSettings.from_args(args))


def serve(settings: PdfChatSettings) -> None:
    """Load everything once, make sure the sample is indexed, serve until Ctrl-C."""
    from apps.pdf_chat.ui import CSS, build_demo  # gradio loads only here

    model_switch = settings.model_switch()  # a bad allowlist fails before the models load
    print("Loading the models...", flush=True)
    app = PdfChat(settings.data_dir, llm=settings.load_model(), model_switch=model_switch)
    app.ensure_sample()
    build_demo(app, settings.collection).queue().launch(css=CSS, **launch_kwargs(settings, app.limits))
