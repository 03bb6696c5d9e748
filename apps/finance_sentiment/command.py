"""`llmkit sentiment-app`: its flags, its settings, and start-up (open the store, load the classifier, serve).

Imported by the CLI to build its parser, so gradio, the classifier and the app's handlers are imported only when the
command runs. It runs no LLM: no model flags.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from apps.common import DATA_DIR_HELP, AppSettings, Limits, add_allow_host_flag, add_server_flags, launch_kwargs
from apps.finance_sentiment.news import MAX_FILE_BYTES

PORT = 7861
LIMITS = Limits(upload_mb=MAX_FILE_BYTES // 2**20)  # Gradio refuses bigger uploads while receiving them


@dataclass
class SentimentAppSettings(AppSettings):
    port: int = PORT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_flags(parser, port=PORT)
    parser.add_argument("--data-dir", help=DATA_DIR_HELP.replace("where collections live",
                                                                 "where scored news is kept (sentiment/news.sqlite3)"))
    add_allow_host_flag(parser)


def run(args: argparse.Namespace) -> None:
    serve(SentimentAppSettings.from_args(args))


def serve(settings: SentimentAppSettings) -> None:
    """Open the store, load the classifier once (its first use exports it to ONNX), serve until Ctrl-C."""
    from apps.finance_sentiment.app import SentimentApp
    from apps.finance_sentiment.ui import CSS, build_demo  # gradio loads only here

    print("Loading the sentiment classifier...", flush=True)
    try:
        app = SentimentApp(settings.data_dir)
        app.warm_up()
    except (FileNotFoundError, ValueError) as e:  # no trained weights; a store that is not ours
        sys.exit(f"llmkit sentiment-app: {e}")
    build_demo(app).queue().launch(css=CSS, **launch_kwargs(settings, LIMITS))
