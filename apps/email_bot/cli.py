"""`llmkit email`: run the responder service, look at its queue, approve or reject drafts, triage saved messages.

Imported by the CLI to build its parser: nothing heavy at import. `triage` works offline on .eml files (no server,
no config needed); the other commands read the config, and `serve` / `status` / the queue commands import the
service and the ledger only when run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from apps.common import add_model_flags
from apps.email_bot.config import Config, load_config

CONFIG_HELP = "the service's TOML config (see apps/email_bot/sample.toml)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", required=True, type=Path, help=CONFIG_HELP)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON")

    serve = actions.add_parser("serve", parents=[config], help="watch the mailboxes, triage and draft replies, "
                               "serve the approval queue, send approved replies")
    serve.add_argument("--ui-port", type=int, default=None, help="the approval queue's port on 127.0.0.1 "
                       "(default: the service's)")
    serve.add_argument("--model", help="the model that triages and drafts, instead of the config's `model` (a .gguf "
                       "file, a checkpoint, a Hugging Face id or a server's URL; default: the embedded SmolLM2)")
    actions.add_parser("status", parents=[config, as_json], help="the service's state: accounts, counts by state")
    actions.add_parser("drafts", parents=[config, as_json], help="the drafts waiting for approval")
    approve = actions.add_parser("approve", parents=[config], help="approve draft ID (the service sends it)")
    approve.add_argument("id", type=int)
    approve.add_argument("--text", type=Path, help="a file with the edited reply text to send instead of the draft")
    reject = actions.add_parser("reject", parents=[config], help="reject draft ID (nothing is sent)")
    reject.add_argument("id", type=int)
    reject.add_argument("--reason", default="", help="why (kept in the ledger)")

    triage = actions.add_parser("triage", parents=[as_json], help="parse and triage saved messages offline: "
                                "one line (a JSON object with --json) per file: draft, skip or quarantine, and why")
    triage.add_argument("files", nargs="+", help=".eml files (RFC 822), or - for one message on stdin")
    triage.add_argument("--config", type=Path, help=CONFIG_HELP + "; gives our addresses, the policy and the "
                        "limits (default: none of ours, default limits)")
    triage.add_argument("--no-model", action="store_true", help="the header rules only: no model is loaded, a "
                        "message that passes them is 'draft' without a label")
    add_model_flags(triage)


def run(args: argparse.Namespace) -> None:
    {"serve": _serve, "status": _status, "drafts": _drafts, "approve": _approve, "reject": _reject,
     "triage": _triage}[args.action](args)


# --- the service and its queue ----------------------------------------------------------------------------------------

def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)  # ConfigError is a ValueError: one `llmkit: ...` line


def _serve(args: argparse.Namespace) -> None:
    config = _config(args)
    from apps.email_bot import service

    if args.model:
        config.model = args.model
    code = service.serve(config, ui_port=args.ui_port)
    if code:
        sys.exit(code)


def _status(args: argparse.Namespace) -> None:
    config = _config(args)
    from apps.email_bot import service

    status = service.status(config)
    if args.json:
        print(json.dumps(status, ensure_ascii=False, default=str))
        return
    for key, value in status.items():
        shown = json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, dict | list) else value
        print(f"{key}: {shown}")


def _ledger(config: Config):
    path = Path(config.state_dir) / "ledger.sqlite"
    if not path.exists():
        raise ValueError(f"there is no ledger at {path} yet: start the service (`llmkit email serve --config ...`)")
    from apps.email_bot.ledger import Ledger

    return Ledger(path)


def item_json(item) -> dict:
    """A ledger item for scripts: every field but the reply's raw bytes (its size instead)."""
    out = {field.name: getattr(item, field.name) for field in dataclasses.fields(item) if field.name != "reply"}
    out["reply_bytes"] = len(item.reply) if getattr(item, "reply", None) else 0
    return out


@contextlib.contextmanager
def _known_item(id: int) -> Iterator[None]:
    """The ledger's KeyError for an unknown id as the one-line error the CLI prints (its transitions' errors
    already are ValueErrors)."""
    try:
        yield
    except KeyError:
        raise ValueError(f"there is no draft #{id} (`llmkit email drafts` lists them)") from None


def _drafts(args: argparse.Namespace) -> None:
    items = _ledger(_config(args)).items(states=["drafted"])
    if args.json:
        print(json.dumps({"drafts": [item_json(item) for item in items]}, ensure_ascii=False, default=str))
        return
    if not items:
        print("no drafts waiting")
    for item in items:
        label = f"{item.label or '-'}/{item.urgency or '-'}"
        print(f"#{item.id}\t{label}\t{item.sender}\t{item.subject[:60]}")


def _approve(args: argparse.Namespace) -> None:
    edited = None
    if args.text is not None:
        try:
            edited = args.text.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read {args.text}: {error}") from None
    with _known_item(args.id):
        item = _ledger(_config(args)).approve(args.id, edited_draft=edited)
    print(f"#{item.id} {item.state}: the running service sends the reply")


def _reject(args: argparse.Namespace) -> None:
    with _known_item(args.id):
        item = _ledger(_config(args)).reject(args.id, reason=args.reason)
    print(f"#{item.id} {item.state}")


# --- offline triage ---------------------------------------------------------------------------------------------------

def _read(name: str, max_bytes: int) -> bytes:
    """The file's bytes, at most max_bytes + 1 of them (parse_email then refuses it as too large)."""
    if name == "-":
        return sys.stdin.buffer.read(max_bytes + 1)
    with open(name, "rb") as file:
        return file.read(max_bytes + 1)


def _triage(args: argparse.Namespace) -> None:
    from apps.email_bot.triage import triage, triage_bytes

    config = _config(args) if args.config is not None else Config(accounts=[])  # no addresses of ours
    llm = None
    failed = 0
    for name in args.files:
        out: dict = {"file": name}
        try:
            raw = _read(name, config.limits.max_message_bytes)
        except OSError as error:
            failed += 1
            out["error"] = f"cannot read it: {error.strerror or error}"
            _print(args, out)
            continue
        email, result = triage_bytes(raw, config)  # the rules alone first: no model for what they skip
        if email is not None and result.action == "draft" and not args.no_model:
            llm = llm or _load(args, config)
            result = triage(email, config, llm)
        out |= {"action": result.action, "reason": result.reason, "label": result.label,
                "urgency": result.urgency, "confidence": result.confidence,
                "message_id": email.message_id if email else None, "subject": email.subject if email else None,
                "sender": email.sender if email else None}
        _print(args, out)
    if failed:
        raise ValueError(f"{failed} of {len(args.files)} files could not be read")


def _load(args: argparse.Namespace, config: Config):
    from core import load

    return load(args.model or config.model, dtype=args.dtype, model_name=args.model_name, api_key=args.api_key)


def _print(args: argparse.Namespace, out: dict) -> None:
    if args.json:
        print(json.dumps(out, ensure_ascii=False), flush=True)
    elif "error" in out:
        print(f"{out['file']}: ERROR {out['error']}", flush=True)
    else:
        label = f" [{out['label']}, {out['urgency']} urgency, {out['confidence']:.2f}]" if out["label"] else ""
        print(f"{out['file']}: {out['action']}{label} {out['reason']}", flush=True)
