"""The approval queue: a Gradio page over the ledger, served by the email service (apps.email_bot.service).

Tabs: "Queue" (the drafts waiting and what became of recent ones, with their triage labels; the chosen item's
original, its draft, editable, and the draft's sources; approve / reject / re-draft), "Log" (what was skipped,
quarantined, failed or rejected, and why) and "Try it" (paste an email: it is parsed, triaged and drafted,
nothing is stored or sent). The handlers `approve`, `reject` and `try_it` are plain functions over the ledger
and the config: the page, the CLI and the tests call the same ones, and none needs gradio.

Approving only moves a drafted item to "approved" in the ledger; the service sends it. Every table and text is
read again from the ledger after each action, so the CLI's or another tab's decisions show on refresh.
"""

from __future__ import annotations

import contextlib
import html
import re
import time
from email.message import EmailMessage
from email.policy import SMTP
from typing import TYPE_CHECKING

from apps.email_bot.drafting import draft_reply, may_auto_send, reply_recipient
from apps.email_bot.policy import NoRecipient

if TYPE_CHECKING:
    import gradio as gr

    from apps.email_bot.config import Config
    from apps.email_bot.ledger import Item, Ledger

MAX_DRAFT_CHARS = 20_000  # an edited draft longer than this is refused
MAX_PASTE_CHARS = 200_000  # of a pasted email ("Try it")
MAX_REASON_CHARS = 500
REFRESH_SECONDS = 15.0  # the queue's tables are read again this often
QUEUE_STATES = ("drafted", "approved", "sending", "sent", "failed", "rejected")
LOG_STATES = ("skipped", "quarantined", "failed", "rejected")
QUEUE_COLUMNS = ["ID", "State", "Label", "Urgency", "Confidence", "From", "Subject", "Received"]
LOG_COLUMNS = ["ID", "State", "Reason", "From", "Subject", "Received"]
_HEADER_LINE = re.compile(r"[A-Za-z0-9-]{1,76}:")
TRY_SENDER = "try-it@example.invalid"  # the sender of a pasted text that has no headers
CSS = """
#item-status { font-size: 1.05em; }
.email-state { border-radius: 4px; padding: 1px 6px; font-weight: 600; }
.email-state-drafted { background: #fff3c4; } .email-state-approved, .email-state-sent { background: #d4f5d4; }
.email-state-rejected, .email-state-failed { background: #fbd5d5; }
.email-sources li { margin-bottom: 0.4em; }
"""


def approve(ledger: Ledger, id: int, edited_text: str | None = None) -> Item:
    """Approve drafted item `id`, with `edited_text` as its draft when given (the service sends it). Raises
    ValueError (ledger.InvalidTransition) for an item that is not drafted, or an edit that is empty or over
    MAX_DRAFT_CHARS; KeyError for an unknown id."""
    if edited_text is not None:
        edited_text = edited_text.replace("\r\n", "\n").strip()
        if not edited_text:
            raise ValueError("the draft is empty: write a reply or reject the item")
        if len(edited_text) > MAX_DRAFT_CHARS:
            raise ValueError(f"the draft is {len(edited_text)} characters long; the limit is {MAX_DRAFT_CHARS}")
    return ledger.approve(int(id), edited_text)


def reject(ledger: Ledger, id: int, reason: str = "") -> Item:
    """Reject item `id`, drafted or approved and not yet sending (nothing is sent); `reason` is kept, cut to
    MAX_REASON_CHARS. ValueError (ledger.InvalidTransition) in any other state."""
    return ledger.reject(int(id), " ".join((reason or "").split())[:MAX_REASON_CHARS])


def try_it(raw_text: str, config: Config, llm, kb=None, past=None) -> dict:
    """Parse, triage and draft a pasted email without storing or sending anything. `raw_text`: a whole message
    (headers, a blank line, the body) or just a body (then sent "from" TRY_SENDER). Returns {"action",
    "reason", "label", "urgency", "confidence", "sender", "subject"}, and for a drafted one also "draft" (None:
    no draft), "sources", "found", "draft_reason", "recipient", "auto_send". ValueError for an empty or
    oversized paste."""
    from apps.email_bot.triage import triage_bytes

    if not isinstance(raw_text, str) or not raw_text.strip():
        raise ValueError("paste an email: its headers and body, or just its text")
    if len(raw_text) > MAX_PASTE_CHARS:
        raise ValueError(f"the text is {len(raw_text)} characters long; the limit is {MAX_PASTE_CHARS}")
    email, verdict = triage_bytes(_as_message(raw_text), config, llm)
    result = {"action": verdict.action, "reason": verdict.reason, "label": verdict.label,
              "urgency": verdict.urgency, "confidence": verdict.confidence,
              "sender": email.sender if email else None, "subject": email.subject if email else None}
    if email is None or verdict.action != "draft":
        return result
    draft = draft_reply(email, [], config, llm, kb, past)
    try:
        recipient = reply_recipient(email, config.accounts[0], config.policy)
    except NoRecipient as error:
        recipient = f"(none: {error})"
    return {**result, "draft": draft.body, "sources": draft.sources, "found": draft.found,
            "draft_reason": draft.reason, "recipient": recipient,
            "auto_send": may_auto_send(email, verdict, config.policy, draft)}


def _as_message(text: str) -> bytes:
    """`text` as message bytes: as is when it starts with header lines that include From (a whole message), else
    a body under a plain header ("Question: how do I ..." is a body)."""
    text = text.lstrip()
    first = text.split("\n", 1)[0]
    head = re.split(r"\r?\n\r?\n", text, maxsplit=1)[0]
    if _HEADER_LINE.match(first) and re.search(r"^from:", head, re.I | re.M):
        return text.encode("utf-8", "replace")
    message = EmailMessage(policy=SMTP)
    message["From"] = TRY_SENDER
    message["Subject"] = " ".join(first.split())[:80] or "(pasted text)"
    message["Message-ID"] = f"<try-{time.time_ns()}@example.invalid>"
    message.set_content(text)
    return message.as_bytes()


# --- what the page shows ------------------------------------------------------------------------------------------


def queue_rows(ledger: Ledger) -> list[list]:
    """QUEUE_COLUMNS rows: drafts waiting first (oldest first), then the rest, newest first."""
    items = ledger.items(QUEUE_STATES)
    items.sort(key=lambda i: (i.state != "drafted", i.received_at if i.state == "drafted" else -i.received_at))
    return [[i.id, i.state, i.label or "", i.urgency or "", "" if i.confidence is None else f"{i.confidence:.2f}",
             i.sender, i.subject, _when(i.received_at)] for i in items]


def log_rows(ledger: Ledger) -> list[list]:
    items = sorted(ledger.items(LOG_STATES), key=lambda i: -i.updated_at)
    return [[i.id, i.state, i.reason or "", i.sender, i.subject, _when(i.updated_at)] for i in items]


def counts_line(ledger: Ledger) -> str:
    """"2 waiting for approval · 1 approved · ..." from the ledger's counts, the states with items only."""
    counts = ledger.counts()
    named = {"drafted": "waiting for approval", "approved": "approved", "sending": "sending", "sent": "sent",
             "rejected": "rejected", "skipped": "skipped", "quarantined": "quarantined", "failed": "failed"}
    parts = [f"{counts[state]} {name}" for state, name in named.items() if counts.get(state)]
    return " · ".join(parts) or "No mail yet."


def item_status(item: Item | None) -> str:
    """HTML of an item's heading: its id, state, triage label and reason."""
    if item is None:
        return "<p>Choose an item in the queue.</p>"
    label = f" · {html.escape(item.label)}" if item.label else ""
    if item.confidence is not None:
        label += f" ({item.confidence:.2f})"
    reason = f" — {html.escape(item.reason)}" if item.reason else ""
    return (f"<p><b>#{item.id}</b> <span class='email-state email-state-{html.escape(item.state)}'>"
            f"{html.escape(item.state)}</span>{label} · from {html.escape(item.sender)} · "
            f"{html.escape(item.subject)}{reason}</p>")


def sources_html(sources: list[dict]) -> str:
    """The draft's sources: each quote with its collection and document; closest passages not used are marked."""
    if not sources:
        return "<p>No sources: the draft quotes nothing.</p>"
    rows = []
    for source in sources:
        where = f"{source.get('collection', '')}: {source.get('source', '')} {source.get('locator') or ''}".strip()
        unused = "" if source.get("used", True) else " <i>(closest passage, not used)</i>"
        rows.append(f"<li><b>{html.escape(where)}</b>{unused}<br>\u201c{html.escape(source.get('quote', ''))}"
                    "\u201d</li>")
    return f"<ul class='email-sources'>{''.join(rows)}</ul>"


def try_it_html(result: dict) -> str:
    """What "Try it" decided, as HTML (escaped: the reason and the recipient quote the pasted email)."""
    lines = [f"<b>{html.escape(result['action'])}</b> — {html.escape(result['reason'])}"]
    if result.get("label"):
        confidence = "" if result.get("confidence") is None else f" ({result['confidence']:.2f})"
        lines.append(f"Label: {html.escape(result['label'])}{confidence}, urgency "
                     f"{html.escape(result.get('urgency') or '?')}")
    if "draft" in result:
        lines.append(f"Reply to: {html.escape(result['recipient'])} · auto-send: "
                     f"{'yes' if result['auto_send'] else 'no'} · {html.escape(result['draft_reason'])}")
    return "".join(f"<p>{line}</p>" for line in lines)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


# --- the page ---------------------------------------------------------------------------------------------------------


def build_ui(ledger: Ledger, config: Config, llm, redraft, *, kb=None, past=None, lock=None,
             refresh_seconds: float | None = REFRESH_SECONDS) -> gr.Blocks:
    """The page over `ledger`. `redraft(id) -> Item`: drafts item `id` again (the service's, which holds the
    thread and the collections); `kb`, `past`: the collections "Try it" drafts from; `lock`: held while "Try it"
    uses the model and the collections, when the service uses them from another thread (a rag Collection is
    used by one thread at a time). `refresh_seconds`: how often the counts and tables are read again (the chosen
    item and its draft, maybe being edited, are left alone); None: only on Refresh and after an action."""
    import gradio as gr

    lock = lock or contextlib.nullcontext()

    def table(rows: list[list], columns: list[str]) -> dict:
        return gr.update(value={"headers": columns, "data": rows or [[""] * len(columns)]})

    def choices() -> list[tuple[str, int]]:
        return [(f"#{i.id} {i.state}: {i.subject[:60]}", i.id) for i in ledger.items(QUEUE_STATES)]

    def show(id):
        """(status, original, draft, sources) of item `id`."""
        if id in (None, ""):
            return item_status(None), "", "", ""
        item = ledger.get(int(id))
        return item_status(item), item.original, item.draft or "", sources_html(item.sources)

    def refresh(id):
        return (counts_line(ledger), table(queue_rows(ledger), QUEUE_COLUMNS), gr.update(choices=choices(), value=id),
                table(log_rows(ledger), LOG_COLUMNS), *show(id))

    def act(action, id, *args):
        if id in (None, ""):
            gr.Warning("Choose an item first")
            return refresh(id)
        try:
            action(int(id), *args)
        except (ValueError, LookupError) as error:  # a state that moved on, an unknown id, a refusal
            gr.Warning(str(error))
        return refresh(id)

    def pick(rows, event):
        """The id in the clicked row of the queue table."""
        row = event.index[0] if isinstance(event.index, list | tuple) else event.index
        try:
            return int(rows.iloc[row, 0]) if hasattr(rows, "iloc") else int(rows["data"][row][0])
        except (ValueError, TypeError, IndexError, KeyError):
            return None

    pick.__annotations__ = {"event": gr.SelectData}  # how gradio knows to pass the click (not a postponed string)

    def tried(text):
        try:
            with lock:
                result = try_it(text, config, llm, kb, past)
        except ValueError as error:
            gr.Warning(str(error))
            return "", "", ""
        return try_it_html(result), result.get("draft") or "", sources_html(result.get("sources") or [])

    with gr.Blocks(title="llmkit email: approval queue") as demo:
        gr.HTML(f"<style>{CSS}</style>")  # here, not in launch(css=): the service mounts the page in its own app
        gr.Markdown("## Email approval queue\nDrafts wait here until a person approves them; the service sends "
                    "approved replies. A reply only ever goes to the original sender.")
        counts = gr.Markdown(elem_id="counts")
        with gr.Tab("Queue"):
            queue = gr.Dataframe(headers=QUEUE_COLUMNS, interactive=False, elem_id="queue", wrap=True)
            with gr.Row():
                chosen = gr.Dropdown(label="Item", choices=[], elem_id="item", scale=3)
                refresh_button = gr.Button("Refresh", elem_id="refresh", scale=1)
            status = gr.HTML(item_status(None), elem_id="item-status")
            with gr.Row():
                original = gr.Textbox(label="Original", lines=14, max_lines=30, interactive=False, elem_id="original")
                draft = gr.Textbox(label="Draft (edit before approving)", lines=14, max_lines=30, elem_id="draft")
            gr.Markdown("**Sources of the draft**")
            sources = gr.HTML(elem_id="sources")
            with gr.Row():
                approve_button = gr.Button("Approve and send", variant="primary", elem_id="approve")
                redraft_button = gr.Button("Re-draft", elem_id="redraft")
                reason = gr.Textbox(label="Reason to reject (optional)", elem_id="reject-reason", scale=2)
                reject_button = gr.Button("Reject", variant="stop", elem_id="reject")
        with gr.Tab("Log"):
            gr.Markdown("What was not answered, and why: skipped by triage, quarantined (could not be read), "
                        "failed to send, or rejected.")
            log = gr.Dataframe(headers=LOG_COLUMNS, interactive=False, elem_id="log", wrap=True)
        with gr.Tab("Try it"):
            gr.Markdown("Paste an email (headers and body, or just the text): it is triaged and drafted here, "
                        "nothing is stored or sent.")
            pasted = gr.Textbox(label="Email", lines=10, max_lines=30, elem_id="paste")
            try_button = gr.Button("Triage and draft", variant="primary", elem_id="try")
            verdict = gr.HTML(elem_id="try-verdict")
            try_draft = gr.Textbox(label="Draft", lines=10, interactive=False, elem_id="try-draft")
            try_sources = gr.HTML(elem_id="try-sources")

        shown = [counts, queue, chosen, log, status, original, draft, sources]
        demo.load(refresh, [chosen], shown)
        if refresh_seconds:
            gr.Timer(refresh_seconds).tick(lambda: (counts_line(ledger), table(queue_rows(ledger), QUEUE_COLUMNS),
                                                    table(log_rows(ledger), LOG_COLUMNS)), None, [counts, queue, log])
        refresh_button.click(refresh, [chosen], shown)
        chosen.change(show, [chosen], [status, original, draft, sources])
        queue.select(pick, [queue], [chosen])
        approve_button.click(lambda id, text: act(lambda i, t: approve(ledger, i, t), id, text), [chosen, draft], shown)
        reject_button.click(lambda id, why: act(lambda i, r: reject(ledger, i, r), id, why), [chosen, reason], shown)
        redraft_button.click(lambda id: act(redraft, id), [chosen], shown)
        try_button.click(tried, [pasted], [verdict, try_draft, try_sources])
    return demo


def mount(app, blocks: gr.Blocks):
    """`blocks` served at / of the service's FastAPI app, beside /healthz and /metrics."""
    import gradio as gr

    return gr.mount_gradio_app(app, blocks, path="/")
