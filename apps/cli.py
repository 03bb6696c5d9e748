"""The `llmkit` command. Each subcommand parses its flags and calls the library; no logic lives here.

The model, server, index and retrieval commands are defined here; each app's command comes from the `APPS`
table, whose modules each give `add_arguments(parser)` and `run(args)`. Every command that uses a model takes
the same model flags (`apps.common.add_model_flags`) and hands them to `core.load`. The errors a user can
cause (a missing model, a server that cannot be reached or refuses, a bad value) end as one `llmkit: ...`
line and exit status 1.

Start-up time matters for scripts (`llmkit search --json` in a loop): this module imports no model library (torch,
transformers, gradio); each command imports what it uses, and the parser imports an app's module only for that
app's command. Output is for scripts too: `--json` prints one JSON object on stdout and, unless there is an error,
nothing on stderr (warnings go into the object); progress bars show only on a terminal; a reader that stops early
(`| head`) ends the command quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import select
import sys
import warnings
from collections.abc import Iterator

from apps.common import DATA_DIR_HELP, add_model_flags, add_server_flags
from core import ModelLoadError, load, settings
from core.resolve import is_url, model_spec

# (command, module, help): an app's command. The module is imported to build the parser, so it must not import
# gradio or load anything at import; its run(args) does.
APPS = (
    ("explore", "apps.explorer", "the attention explorer web app (Gradio): tokens, attention maps, masks, sampling"),
    ("pdf-chat", "apps.pdf_chat", "the chat-with-your-PDFs web app (Gradio)"),
    ("sentiment", "apps.finance_sentiment.cli", "financial news sentiment: score, file, train, evaluate"),
    ("sentiment-app", "apps.finance_sentiment", "the financial news sentiment web app (Gradio)"),
    ("email", "apps.email_bot", "the email responder: serve (IMAP, triage, drafts, approval queue, SMTP), "
     "status, drafts, approve, reject, and offline triage of .eml files"),
    ("review", "apps.code_review.cli", "review Python code (a file, folder, diff or git range) with ruff, bandit, "
     "radon: Markdown, JSON, SARIF or GitHub annotations"),
    ("debug", "apps.code_review.cli", "find the lines a failing test points at, and patches the tests accept"),
    ("code-review", "apps.code_review", "the code review and debugging web app (Gradio)"),
)
CHAT_HELP = "Type a message and press Enter. /reset starts a new conversation; /exit or Ctrl-D quits."
SERVED_NAME_HELP = "the name clients send as `model` (default: the model file's stem)"


def _load(args: argparse.Namespace):
    return load(args.model, dtype=args.dtype, model_name=args.model_name, api_key=args.api_key)


def _sampling(args: argparse.Namespace) -> dict:
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed)


def cmd_generate(args: argparse.Namespace) -> None:
    llm = _load(args)
    prompt = [{"role": "user", "content": args.prompt}] if args.chat else args.prompt
    for delta in llm.stream(prompt, **_sampling(args)):
        print(delta, end="", flush=True)
    print()


def cmd_chat(args: argparse.Namespace) -> None:
    from core import RemoteLLM

    llm = _load(args)
    where = f"{llm.name} at {llm.base_url}" if isinstance(llm, RemoteLLM) else llm.source
    print(f"llmkit chat with {where}\n{CHAT_HELP}")
    messages: list[dict] = []
    while True:
        try:
            text = input("\nyou> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            messages = []
            print("(new conversation)")
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        print("assistant> ", end="", flush=True)
        reply = ""
        try:
            for delta in llm.stream(messages, **_sampling(args)):
                reply += delta
                print(delta, end="", flush=True)
        except KeyboardInterrupt:
            print(" [stopped]", end="")
        except ValueError as error:  # the conversation outgrew the context (or the server refused it)
            messages.pop()
            print(f"\nllmkit: {error}. Type /reset to start a new conversation.")
            continue
        print()
        messages.append({"role": "assistant", "content": reply})


def cmd_serve(args: argparse.Namespace) -> None:
    from core.server import ServerLimits, check_binding, serve  # fastapi and uvicorn load only for this command

    spec = model_spec(args.model)
    if is_url(spec):
        sys.exit(f"llmkit: serve runs a local model; {spec} is already a server (serving a remote model is "
                 "not supported: point clients at it directly)")
    api_key = args.api_key or settings.env(settings.API_KEY)
    check_binding(args.host, api_key)  # before the model loads
    limits = ServerLimits.from_settings(**{name: getattr(args, name) for name in settings.SERVE_LIMITS})
    hosts = [*args.allowed_host, *(settings.env(settings.ALLOWED_HOSTS) or "").split(",")]
    llm = load(args.model, dtype=args.dtype, model_name=args.model_name)
    serve(llm, host=args.host, port=args.port, limits=limits, api_key=api_key,
          allowed_hosts=[host.strip() for host in hosts if host.strip()])


def _open_collection(args: argparse.Namespace, must_exist: bool = True):
    from rag.collection import Collection, collection_names  # the embedder loads only for these commands

    if must_exist and args.collection not in collection_names(args.data_dir):
        sys.exit(f"llmkit: there is no collection {args.collection!r} (`llmkit index list` shows them; "
                 "`llmkit index add` creates one)")
    try:
        return Collection.open(args.collection, args.data_dir)
    except FileNotFoundError as error:  # the embedding model named by LLMKIT_EMBEDDING_MODEL
        sys.exit(f"llmkit: {error}")


def _progress_bar():
    """A tqdm bar per ingest stage on stderr, as `Collection.add_files` reports progress; None (no bars) when stderr
    is not a terminal."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bars = {}

    def update(stage: str, done: float, total: int) -> None:
        if stage not in bars:
            # Reading counts files, in fractions as a PDF's pages go by: show them to one decimal.
            # OCR counts one file's scanned pages: a bar per file.
            count = {"load": "{n:.1f}/{total} files", "ocr": "{n_fmt}/{total_fmt} pages"}.get(stage,
                                                                                        "{n_fmt}/{total_fmt} chunks")
            names = {"load": "reading", "ocr": "OCR", "embed": "embedding"}
            bars[stage] = tqdm(total=total, desc=names.get(stage, stage),
                               bar_format="{l_bar}{bar}| " + count + " [{elapsed}<{remaining}]", file=sys.stderr)
        bars[stage].update(done - bars[stage].n)
        if done >= total:
            bars.pop(stage).close()

    return update


def cmd_index_add(args: argparse.Namespace) -> None:
    with _open_collection(args, must_exist=False) as collection:
        reports = collection.add_files(args.files, password=args.password, progress=_progress_bar())
        failed = 0
        for report in reports:
            if report.error:
                failed += 1
                print(f"{report.name}: ERROR {report.error}")
                continue
            ocr = f", {len(report.pages_ocr)} read by OCR" if report.pages_ocr else ""
            ocr += f", {len(report.pages_needing_ocr)} need OCR" if report.pages_needing_ocr else ""
            print(f"{report.name}: {report.pages_with_text}/{report.pages_total} pages with text{ocr}")
            for warning in report.warnings:
                print(f"  warning: {warning}")
        print(f"collection {collection.name!r}: {len(collection.documents())} documents, {len(collection)} chunks")
    if failed:  # the others are indexed; the exit status tells scripts that not everything was
        sys.exit(1)


def cmd_index_list(args: argparse.Namespace) -> None:
    from rag.collection import collection_names

    if args.collection is None:
        for name in collection_names(args.data_dir):
            print(name)
        return
    with _open_collection(args) as collection:
        for doc in collection.documents():
            ocr = f", {len(doc.pages_needing_ocr)} pages need OCR" if doc.pages_needing_ocr else ""
            print(f"{doc.file_name}\t{doc.pages_total} pages, {doc.n_chunks} chunks{ocr}\t"
                  f"{doc.doc_id[:12]}\t{doc.added_at}")


def cmd_index_remove(args: argparse.Namespace) -> None:
    with _open_collection(args) as collection:
        try:
            missing = [name for name in args.files if collection.remove(name) == 0]
        except ValueError as error:  # an id prefix of several documents
            sys.exit(f"llmkit: {error}")
    for name in missing:
        print(f"llmkit: no document {name!r} in collection {args.collection!r}", file=sys.stderr)
    if missing:
        sys.exit(1)


def _source_json(hit) -> dict:
    """A hit for --json: where it is, its text, and its scores (ranking, dense cosine, BM25; null where that
    method did not find it)."""
    return {"file": hit.chunk.file_name, "page": hit.chunk.page, "locator": hit.chunk.locator, "text": hit.chunk.text,
            "score": hit.score, "dense_score": hit.dense_score, "bm25_score": hit.bm25_score}


@contextlib.contextmanager
def _json_warnings(args: argparse.Namespace, out: dict) -> Iterator[None]:
    """Under --json, the warnings raised inside go into `out["warnings"]` (when there are any), not to stderr."""
    if not args.json:
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    if caught:
        out["warnings"] = list(dict.fromkeys(str(w.message) for w in caught))


def cmd_search(args: argparse.Namespace) -> None:
    out: dict = {}
    with _json_warnings(args, out), _open_collection(args) as collection:
        from rag.retriever import Retriever

        hits = Retriever(collection).search(args.query, k=args.k, mode=args.mode)
    if args.json:
        print(json.dumps({"sources": [_source_json(hit) for hit in hits], **out}, ensure_ascii=False))
        return
    for rank, hit in enumerate(hits, start=1):
        print(f"{rank}. [{hit.chunk.file_name} {hit.chunk.locator}] score {hit.score:.4f}\n   "
              + " ".join(hit.chunk.text.split())[:300])


def cmd_ask(args: argparse.Namespace) -> None:
    from rag.answer import stream_answer
    from rag.retriever import Retriever

    out: dict = {}
    with _json_warnings(args, out), _open_collection(args) as collection:
        stream = stream_answer(Retriever(collection), _load(args), args.question, k=args.k, mode=args.mode,
                               style=args.style, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                               top_p=args.top_p, seed=args.seed)
        for delta in stream:
            if not args.json:
                print(delta, end="", flush=True)
    answer = stream.answer
    if args.json:
        print(json.dumps({**answer.to_json(), **out}, ensure_ascii=False))
        return
    print()
    if answer.invalid_citations:
        print(f"(removed citations of pages that were not retrieved: {', '.join(answer.invalid_citations)})")
    if answer.sources:
        print("\nSources:")
    for source in answer.sources:
        mark = "*" if source.cited else " "
        print(f"{mark}[{source.number}] {source.file} {source.locator} (score {source.score:.4f}): "
              + " ".join(source.text.split())[:200])


def _add_generation_flags(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    add_model_flags(parser)
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling: keep this much probability mass")
    parser.add_argument("--seed", type=int, help="makes sampling at temperature > 0 reproducible")


def _add_serve_flags(serve: argparse.ArgumentParser) -> None:
    """serve's flags: a local model's (no --api-key: that is the server's own here), binding, auth, limits."""
    add_model_flags(serve, SERVED_NAME_HELP, remote=False)
    add_server_flags(serve, port=8000, host_help="the address to bind; anything but loopback (e.g. 0.0.0.0) "
                     "requires --api-key")
    access = serve.add_argument_group("access")
    access.add_argument("--api-key", help="this server's key: clients must send `Authorization: Bearer KEY` "
                        f"(default: env {settings.API_KEY}; none on loopback)")
    access.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="on loopback, a Host name to answer besides localhost, 127.0.0.1 and [::1] (repeatable; "
                        f"default: env {settings.ALLOWED_HOSTS}, comma-separated)")
    limits = serve.add_argument_group("limits (each also an env variable; the defaults suit a shared machine)")
    for name, kind, help_ in (
            ("max_body_bytes", int, "bytes of a request body (default 1 MiB)"),
            ("max_prompt_chars", int, "characters of a prompt or its messages (default: 4 per token of context)"),
            ("default_max_tokens", int, "max_tokens of a request that gives none (default 1024)"),
            ("max_tokens", int, "the most max_tokens a request may ask for (default 4096)"),
            ("max_running", int, "requests generating at once (default 8)"),
            ("max_queued", int, "requests waiting beyond them; more get 429 (default 32)"),
            ("request_seconds", float, "a request's wall time, waiting included, in seconds (default 300)")):
        limits.add_argument("--" + name.replace("_", "-"), type=kind,
                            help=f"{help_}; env {settings.SERVE_LIMITS[name]}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command. Given the `command` about to run, the other apps' modules are not imported
    (their commands get only their help line), so `llmkit search` starts without them."""
    parser = argparse.ArgumentParser(prog="llmkit", description="Local LLM applications on your CPU.")
    commands = parser.add_subparsers(dest="command", required=True)
    chat = commands.add_parser("chat", help="interactive streaming chat in the terminal")
    _add_generation_flags(chat, max_new_tokens=512)
    chat.set_defaults(run=cmd_chat)
    generate = commands.add_parser("generate", help="print the continuation of PROMPT")
    generate.add_argument("prompt")
    generate.add_argument("--chat", action="store_true", help="send PROMPT as one user message under the chat template")
    _add_generation_flags(generate, max_new_tokens=128)
    generate.set_defaults(run=cmd_generate)
    serve = commands.add_parser("serve", help="serve the model over an OpenAI-compatible HTTP API (/v1)")
    _add_serve_flags(serve)
    serve.set_defaults(run=cmd_serve)
    _add_rag_commands(commands)
    for name, module_name, help_ in APPS:
        app = commands.add_parser(name, help=help_)
        if command is None or command == name:
            module = importlib.import_module(module_name)
            module.add_arguments(app)
            app.set_defaults(run=module.run)
    return parser


def _add_rag_commands(commands) -> None:
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument("--data-dir", help=DATA_DIR_HELP)
    index = commands.add_parser("index", help="add, list and remove the documents of a collection")
    actions = index.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", parents=[data_dir], help="read, chunk, embed and index files (PDF, txt, md, "
                             "html); the collection is created if missing")
    add.add_argument("collection")
    add.add_argument("files", nargs="+")
    add.add_argument("--password", help="for encrypted PDFs")
    add.set_defaults(run=cmd_index_add)
    listing = actions.add_parser("list", parents=[data_dir], help="the collections, or the documents of one")
    listing.add_argument("collection", nargs="?")
    listing.set_defaults(run=cmd_index_list)
    remove = actions.add_parser("remove", parents=[data_dir], help="remove documents (by file name or id)")
    remove.add_argument("collection")
    remove.add_argument("files", nargs="+")
    remove.set_defaults(run=cmd_index_remove)

    retrieval = argparse.ArgumentParser(add_help=False, parents=[data_dir])
    retrieval.add_argument("collection")
    retrieval.add_argument("--k", type=int, default=5, help="chunks to retrieve (default 5)")
    retrieval.add_argument("--mode", default="hybrid", choices=["hybrid", "dense", "bm25"])
    retrieval.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    search = commands.add_parser("search", parents=[retrieval], help="print the chunks retrieved for QUERY")
    search.add_argument("query")
    search.set_defaults(run=cmd_search)
    ask = commands.add_parser("ask", parents=[retrieval], help="answer QUESTION from a collection, with sources")
    ask.add_argument("question")
    ask.add_argument("--style", default="grounded", choices=["grounded", "free"],
                     help="grounded (default): quotes from the documents, the model choosing which; free: the model "
                          "writes the answer (for large models; the generation flags apply to it)")
    _add_generation_flags(ask, max_new_tokens=256)
    ask.set_defaults(run=cmd_ask)


def _quiet_libraries(args: argparse.Namespace) -> None:
    """No progress bars or advisory logging from model libraries (loading a model's weights draws one) when
    stderr is not a terminal or --json is asked. Set before they are imported: they read the environment then."""
    if getattr(args, "json", False) or not sys.stderr.isatty():
        for name, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TQDM_DISABLE", "1"),
                            ("TRANSFORMERS_VERBOSITY", "error"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
            os.environ.setdefault(name, value)


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader went away (`llmkit search ... | head`), rather than a BrokenPipeError of
    another connection (a model server's). Then its further writes, and the flush at exit, go to /dev/null."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        closed = any(event & select.POLLERR for _, event in poller.poll(0))  # a pipe without a reader: POLLERR
    except (AttributeError, ValueError, OSError):  # no poll (Windows), or no stdout
        return False
    if closed:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return closed


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(next((arg for arg in argv if not arg.startswith("-")), None)).parse_args(argv)
    _quiet_libraries(args)
    try:
        args.run(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
    except (ModelLoadError, ConnectionError, ValueError, TimeoutError) as error:  # TimeoutError: a collection's lock
        if isinstance(error, BrokenPipeError) and _stdout_closed():
            sys.exit(1)  # quietly, as `cat` does
        sys.exit(f"llmkit: {error}")


if __name__ == "__main__":
    main()
