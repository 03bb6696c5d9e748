"""`llmkit explore`: its flags, its settings, and start-up (load the model once, serve).

Imported by the CLI to build its parser, so torch, gradio and the model are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from apps.common import AppSettings, add_allow_host_flag, add_model_flags, add_server_flags, launch_kwargs
from core.resolve import is_url, model_spec

PORT = 7862


@dataclass
class ExplorerSettings(AppSettings):
    port: int = PORT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_flags(parser, remote=False)
    add_server_flags(parser, port=PORT)
    add_allow_host_flag(parser)


def run(args: argparse.Namespace) -> None:
    serve(ExplorerSettings.from_args(args))


def serve(settings: ExplorerSettings) -> None:
    """Load the model once (any representation: the maps are computed in float32 from its own q and k), serve until
    Ctrl-C. A server's URL is refused: attention weights and logits need the model in this process."""
    if is_url(model_spec(settings.model)):
        sys.exit(f"llmkit explore: {model_spec(settings.model)} is a server; the explorer needs the model's weights "
                 "in this process (give a .gguf file, a checkpoint directory or a Hugging Face id, or nothing for "
                 "the embedded SmolLM2)")
    from apps.explorer.app import Explorer
    from apps.explorer.ui import CSS, build_demo  # gradio loads only here

    print("Loading the model...", flush=True)
    llm = settings.load_model()
    build_demo(Explorer(llm.model, llm.tokenizer, llm.name)).queue().launch(css=CSS, **launch_kwargs(settings))
