"""What every app shares, so a new app copies nothing out of another: its start-up settings (flags over the
LLMKIT_* environment), its input limits, the model it runs on and the line that says which, who may change it
from the web page (nobody, unless the operator's flags allow it), uploads checked against the limits, and the
chat messages a Gradio chatbot shows (agent steps as they happen, the history the browser hands back as plain
{"role", "content"} messages).

Does not import gradio (each app's ui.py does): `llmkit --help` imports this module, and every function here
works on plain data, testable without a browser.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Self
from urllib.parse import urlsplit

from core import ModelLoadError, load, settings
from core.resolve import is_url
from rag.answer import MAX_QUESTION_CHARS
from rag.loaders import SUFFIX_KINDS

if TYPE_CHECKING:
    from agents import Step
    from core import ChatModel
    from rag import LoadReport

MODEL_NAME_HELP = (f"for a server URL: the model to ask it for (default: env {settings.MODEL_NAME}, else the first "
                   "it lists); for a local model: the name it goes by (default: the file's stem)")
DATA_DIR_HELP = (f"where collections live (default: env {settings.HOME}, else the user's data dir, "
                 "~/.local/share/llmkit on Linux)")
MODEL_BOX_LABEL = ("Model: empty for the embedded one, a .gguf path, a checkpoint directory, a Hugging Face id, "
                   "or an OpenAI-compatible URL the operator allowed ({servers})")
STEP_CHARS = 1500  # of a tool step's result shown in the chat


# --- start-up: flags and settings -------------------------------------------------------------------------------------

def add_model_flags(parser: argparse.ArgumentParser, model_name_help: str = MODEL_NAME_HELP,
                    remote: bool = True) -> None:
    """The flags every command that uses a model takes, meaning the same everywhere (see `core.load`).
    `remote=False`: a command that runs local models only, without the server URL's --api-key."""
    flags = parser.add_argument_group("model")
    flags.add_argument("--model", help="a .gguf file, a Hugging Face checkpoint directory or model id, or an "
                       f"OpenAI-compatible server's URL http(s)://HOST:PORT/v1 (default: env {settings.MODEL}, "
                       "else the embedded SmolLM2-135M-Instruct)")
    flags.add_argument("--model-name", help=model_name_help)
    if remote:
        flags.add_argument("--api-key", help=f"for a server URL: its API key (default: env {settings.MODEL_API_KEY})")
    flags.add_argument("--dtype", default="auto", choices=["auto", "int4", "float32", "bfloat16", "float16"],
                       help="for a local model: auto is int4 (4-bit layers, bfloat16 activations) for a 4-bit GGUF "
                       "on a CPU with bfloat16 instructions, else float32, which matches transformers exactly "
                       "(see the README)")


def add_server_flags(parser: argparse.ArgumentParser, port: int,
                     host_help: str = "0.0.0.0 exposes it to the network, without any auth") -> None:
    parser.add_argument("--host", default="127.0.0.1", help=host_help)
    parser.add_argument("--port", type=int, default=port)


def add_app_flags(parser: argparse.ArgumentParser, port: int) -> None:
    """The flags of `AppSettings`: the model's, --host, --port, --data-dir and the sharing ones."""
    add_model_flags(parser)
    add_server_flags(parser, port)
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    add_sharing_flags(parser)


def add_sharing_flags(parser: argparse.ArgumentParser) -> None:
    """What the users of a shared page may do: change the model (see `ModelSwitch`; by default nobody may), and
    the names the page answers to (see `allowed_hosts`)."""
    add_allow_host_flag(parser)
    flags = parser.add_argument_group("changing the model from the web page")
    flags.add_argument("--allow-model-switch", action="store_true", default=None,
                       help="let every user of the page change the model every session uses (a local model; a "
                       "server's URL only if listed with --allow-model-url)")
    flags.add_argument("--allow-model-url", action="append", dest="allow_model_urls", metavar="URL",
                       help="an OpenAI-compatible server's URL the page may switch to (with --allow-model-switch; "
                       "repeatable): every question, with its retrieved passages, is sent there")


def add_allow_host_flag(parser: argparse.ArgumentParser) -> None:
    """--allow-host, for `allowed_hosts`: an app without a model takes it alone."""
    parser.add_argument("--allow-host", action="append", dest="allow_hosts", metavar="NAME",
                        help="a name the page answers to besides localhost, when bound to loopback (a reverse "
                        "proxy's; repeatable): other Host headers are refused (DNS rebinding)")


@dataclass
class AppSettings:
    """What an app starts with. `from_args` takes each field from the flag of the same name where it was given;
    a missing --data-dir is env LLMKIT_HOME, else the user's data dir (core.settings), and the model fields go
    to `core.load` as they are (None: its LLMKIT_* variable, then its default). An app with settings of its
    own subclasses this, one field per flag."""

    data_dir: Path = field(default_factory=settings.data_dir)
    model: str | None = None  # a core.load spec: .gguf file, checkpoint dir, HF id or server URL
    model_name: str | None = None
    api_key: str | None = None
    dtype: str = "auto"
    host: str = "127.0.0.1"
    port: int = 7860
    allow_model_switch: bool = False
    allow_model_urls: list[str] = field(default_factory=list)
    allow_hosts: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.data_dir = Path(self.data_dir).expanduser()
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port {self.port} is not a TCP port: give 1 to 65535 (0: any free port)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None})

    def load_model(self) -> ChatModel:
        """The model the settings name (see `core.load`); raises as it does."""
        return load(self.model, dtype=self.dtype, model_name=self.model_name, api_key=self.api_key)

    def model_switch(self) -> ModelSwitch:
        """Who may change the model from the web page; ValueError for an allowlist that is not one."""
        return ModelSwitch(self.allow_model_switch, tuple(self.allow_model_urls))


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> list[str] | None:
    """The Host headers a server bound to `host` answers: when bound to loopback, the loopback names, the bind
    address and `extra`, so a page on another site whose name resolves to 127.0.0.1 (DNS rebinding) cannot read
    it through the visitor's browser; None (any) for another bind, reached by the names the network gives it."""
    if not settings.is_loopback(host):
        return None
    bound = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return list(dict.fromkeys([*settings.LOOPBACK_HOSTS, bound.lower(), *(name.lower() for name in extra)]))


def launch_kwargs(settings: AppSettings, limits: Limits | None = None) -> dict:
    """The keyword arguments of a Gradio app's `launch()`: where it listens, uploads refused above
    `limits.upload_mb` while Gradio receives them (before they are stored), and the Host-header check of
    `allowed_hosts`."""
    from starlette.middleware import Middleware  # not at the top: `llmkit --help` imports this module
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    kwargs = {"server_name": settings.host, "server_port": settings.port, "show_error": True,
              "max_file_size": (limits or LIMITS).upload_mb * 2**20}
    hosts = allowed_hosts(settings.host, settings.allow_hosts)
    if hosts is not None:
        kwargs["app_kwargs"] = {"middleware": [Middleware(TrustedHostMiddleware, allowed_hosts=hosts)]}
    return kwargs


# --- limits and uploads -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """What one request may bring; each app refuses more with a message saying the limit."""

    question_chars: int = MAX_QUESTION_CHARS  # rag.answer's: longer questions are refused there too
    upload_mb: int = 50  # per file
    files_per_upload: int = 20
    history_turns: int = 3  # earlier question/answer pairs sent with a question (the prompt drops more if needed)
    collections: int = 50  # in the data dir, that a page's uploads may create (a name each: a folder, open files)

    def __post_init__(self):
        if not 0 < self.question_chars <= MAX_QUESTION_CHARS:
            raise ValueError(f"question_chars must be 1 to {MAX_QUESTION_CHARS} (rag.answer's limit), "
                             f"not {self.question_chars}")


LIMITS = Limits()


def check_uploads(paths: list[Path], limits: Limits = LIMITS) -> tuple[list[Path], list[str]]:
    """The files to read, and a Markdown line for each refused one: of a type no loader reads, or too big. More
    files than `limits.files_per_upload` are all refused, in one line."""
    if len(paths) > limits.files_per_upload:
        return [], [f"**Too many files:** {len(paths)} at once; the limit is {limits.files_per_upload} per upload."]
    accepted, refused = [], []
    for path in paths:
        size_mb = path.stat().st_size / 2**20 if path.is_file() else 0
        if not path.is_file():  # a web upload's temp copy, deleted by the handler of the same file's other upload
            refused.append(f"- **{path.name}**: error: the uploaded file is gone; upload it again")
        elif path.suffix.lower() not in SUFFIX_KINDS:
            refused.append(f"- **{path.name}**: error: unsupported type; upload {', '.join(sorted(SUFFIX_KINDS))}")
        elif size_mb > limits.upload_mb:
            refused.append(f"- **{path.name}**: error: {size_mb:.0f} MB; the limit is {limits.upload_mb} MB per file")
        else:
            accepted.append(path)
    return accepted, refused


def report_line(report: LoadReport) -> str:
    """One file's ingest report as a Markdown list item: added (pages with text, pages read by OCR, pages still
    needing it, warnings) or the error."""
    if report.error:
        return f"- **{report.name}**: error: {report.error}"
    ocr = f"; pages {', '.join(map(str, report.pages_ocr))} read by OCR" if report.pages_ocr else ""
    if report.pages_needing_ocr:
        ocr += f"; pages {', '.join(map(str, report.pages_needing_ocr))} need OCR"
    notes = "".join(f"\n  - {w}" for w in report.warnings)
    return f"- **{report.name}**: added, {report.pages_with_text} of {report.pages_total} pages with text{ocr}{notes}"


# --- the model --------------------------------------------------------------------------------------------------------

def model_status(model: ChatModel) -> str:
    """The line a page shows for the model in use."""
    return f"Model: `{model.name}`."


@dataclass(frozen=True)
class ModelSwitch:
    """Whether a page's users may change the model, which every session shares, and to which servers.

    Off by default: one browser user must not change another's model, nor make the server fetch a URL and send
    every later question (with its retrieved passages) there. `allowed`: local models (a file, a checkpoint
    directory, a Hugging Face id) may be loaded; a server's URL only when it is one of `urls` (compared without
    case in the scheme and host, and without a trailing slash).
    """

    allowed: bool = False
    urls: tuple[str, ...] = ()

    def __post_init__(self):
        for url in self.urls:
            if not is_url(url) or not urlsplit(url).hostname:
                raise ValueError(f"--allow-model-url {url!r} is not a server's URL: give http(s)://HOST:PORT/v1")
        if self.urls and not self.allowed:
            raise ValueError("--allow-model-url lists servers to switch to, but switching is off: add "
                             "--allow-model-switch")

    def refusal(self, spec: str) -> str | None:
        """Why the page may not switch to `spec`, None when it may."""
        if not self.allowed:
            return ("Changing the model from this page is off (the operator can allow it with "
                    "--allow-model-switch).")
        if is_url(spec.strip()) and _url_key(spec) not in {_url_key(url) for url in self.urls}:
            return (f"{spec.strip()!r} is not one of the servers the operator allowed (--allow-model-url); "
                    f"allowed: {', '.join(self.urls) or 'none'}.")
        return None


def _url_key(url: str) -> tuple[str, ...]:
    parts = urlsplit(url.strip())
    return parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query, parts.fragment


NO_MODEL_SWITCH = ModelSwitch()


def model_box_label(policy: ModelSwitch) -> str:
    """The label of a page's model box: what may be typed there."""
    return MODEL_BOX_LABEL.format(servers=", ".join(policy.urls) or "none")


def switch_model(current: ChatModel, spec: str, policy: ModelSwitch) -> tuple[ChatModel, str]:
    """The model `spec` means (see `core.load`) and its status line, if `policy` allows it; when it does not, or
    the model cannot be loaded, `current` and a line saying why, with a web page's advice (not the command line's
    flags)."""
    refused = policy.refusal(spec)
    if refused:
        return current, f"{refused} Still using `{current.name}`."
    try:
        model = load(spec)
    except (ModelLoadError, ValueError, ConnectionError, OSError) as error:
        reason = error.reason if isinstance(error, ModelLoadError) else str(error)  # without the command line's advice
        return current, (f"Could not load {spec!r}: {reason.rstrip('.')}. Choose another model in Settings. Still "
                         f"using `{current.name}`.")
    return model, model_status(model)


# --- chat messages ----------------------------------------------------------------------------------------------------

def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def plain_messages(history: list[dict] | None) -> list[dict]:
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


def chat_turns(messages: list[dict], limits: Limits = LIMITS) -> list[dict]:
    """The conversation a model is sent: the user's and the assistant's own messages (not the agent's steps,
    which carry metadata), the last `limits.history_turns` pairs of them."""
    turns = [m for m in messages if m["role"] in ("user", "assistant") and not m.get("metadata")]
    return turns[-2 * limits.history_turns:]


def step_message(step: Step) -> dict:
    """An agent step as a chat message: the answer as the assistant's text, any other step as a titled, foldable
    message ("🔧 tool(arguments)" over its result or error)."""
    if step.answer is not None:
        return assistant(step.answer)
    arguments = ", ".join(f"{key}={value!r}" for key, value in (step.arguments or {}).items())
    title = f"🔧 {step.tool}({arguments})" if step.tool else "⚠️ invalid step"
    body = step.error.message if step.error else (step.observation or "")
    return {"role": "assistant", "content": body[:STEP_CHARS], "metadata": {"title": title}}


def agent_messages(steps: Iterable[Step]) -> Iterator[list[dict]]:
    """The chat messages of an agent's run so far, after each step as it happens; a run that ends without an
    answer (its step limit reached) ends with a message that says so."""
    messages: list[dict] = []
    for step in steps:
        messages.append(step_message(step))
        yield list(messages)
    if not any(m.get("metadata") is None for m in messages):
        messages.append(assistant("The agent stopped before it found an answer (step limit reached)."))
        yield list(messages)
