"""The email responder as one process: watch IMAP mailboxes, take each new message through parse, triage and
drafting once, and send approved replies over SMTP exactly once as far as SMTP allows.

Threads. One watcher per (account, mailbox): it selects the mailbox, fetches the UIDs above the last one it
finished (peek only: nothing on the server changes), hands each message to `Service.process`, then waits with
IDLE (polling where the server has none) and reconnects with exponential backoff when the connection drops.
One sender: it sends the ledger's due "approved" items. The model is used by one thread at a time.

Exactly once. `ledger.add` makes a message known before any work, so a message is processed once however often
it is fetched; a crash mid-processing leaves it in "seen" or "triaged" and the next start resumes it from the
bytes the ledger kept. The reply's Message-ID is fixed at drafting; "sending" is written (and synced) before the
SMTP transaction, the reply is appended to the account's Sent folder after the server accepted it, and "sent"
is written last. A start finds any "sending" item in Sent by that Message-ID (sent) or not (approved again).
The one duplicate this allows (a crash after the server's 250 and before the Sent copy) carries the same
Message-ID, so the recipient's client shows one message. A 4xx answer retries with backoff (MAX_ATTEMPTS), a 5xx
marks the item failed with the server's answer and is not retried.

Logs: one JSON object per line on stderr per event; passwords are never put in one, and every line is scrubbed
of the passwords read at start anyway. SIGTERM: the message or transaction in hand finishes, then exit 0.
HTTP (with a UI port): /healthz, /metrics, and the approval queue (ui.build_ui) at /.

Test hook: env LLMKIT_EMAIL_CRASH=after-smtp makes the process die (exit 137, like kill -9) right after the first
SMTP acceptance, before the Sent copy and the "sent" row.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

from apps.email_bot import imap, smtp
from apps.email_bot.config import Account, Config, password
from apps.email_bot.ledger import InvalidTransition, Item, Ledger
from apps.email_bot.parse import Email, Unparseable, parse_email
from apps.email_bot.triage import Triage, triage

MAX_ATTEMPTS = 8  # SMTP transactions per reply before a run of 4xx answers becomes "failed"
SENDER_TICK = 1.0  # seconds between the sender's looks at the ledger (sooner when this process approves)
LEDGER_NAME = "ledger.sqlite"
MAX_MESSAGE_ID = 998
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,996}>")


def ledger_path(config: Config) -> Path:
    return Path(config.state_dir) / LEDGER_NAME


def header_message_id(header: bytes, body: bytes | None) -> str:
    """The Message-ID in a message's header, or one made from a hash of its bytes (stable across fetches)."""
    try:
        value = BytesHeaderParser(policy=compat32).parsebytes(header[:200_000]).get("Message-ID")
        found = _MESSAGE_ID.search(str(value or "")[:MAX_MESSAGE_ID])
    except Exception:  # noqa: BLE001 - a header the parser chokes on gets the hash id, like one without an id
        found = None
    if found:
        return found.group(0)
    return f"<{hashlib.sha256(body if body is not None else header).hexdigest()[:40]}@llmkit.invalid>"


class JsonLog:
    """One JSON object per line on `stream`, with the time; the `secrets` never appear in a line."""

    def __init__(self, stream=None, secrets=()):
        self.stream = stream or sys.stderr
        self.secrets = [secret for secret in secrets if secret]
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields) -> None:
        line = json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str, ensure_ascii=False)
        for secret in self.secrets:
            line = line.replace(secret, "[redacted]")
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


@dataclass
class Watch:
    """What /healthz and /metrics show of one watcher."""
    account: str
    mailbox: str
    connected: bool = False
    last_poll: float | None = None
    reconnects: int = 0
    error: str | None = None


@dataclass
class Service:
    """The service over `config` with a chat model (`llm`, or None: triage by rules only) and the rag collections
    drafts come from. `retry_first` / `retry_cap`: the SMTP retry backoff, seconds; `use_idle=False` polls every
    `limits.poll_seconds` even where the server has IDLE."""
    config: Config
    llm: object = None
    kb: object = None
    past: object = None
    log: JsonLog = None
    retry_first: float = 30.0
    retry_cap: float = 3600.0
    use_idle: bool = True
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self.passwords = {account.name: password(account) for account in self.config.accounts}  # ConfigError first
        if self.log is None:
            self.log = JsonLog(secrets=self.passwords.values())
        else:
            self.log.secrets = [*self.log.secrets, *self.passwords.values()]
        self.ledger = Ledger(ledger_path(self.config))
        self.accounts = {account.name: account for account in self.config.accounts}
        self.watches = [Watch(a.name, mailbox) for a in self.config.accounts for mailbox in a.mailboxes]
        self.started = time.time()
        self._model_lock = threading.Lock()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sent_boxes: dict[str, imap.Mailbox] = {}
        self._crash = os.environ.get("LLMKIT_EMAIL_CRASH", "")
        self.parse_limits = (self.config.limits.max_message_bytes, self.config.limits.max_text_chars)

    # --- running ----------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Resume what a previous run left half-done, then start the watchers and the sender."""
        self.log("start", accounts=list(self.accounts), ledger=str(self.ledger.path))
        self.resume()
        for watch in self.watches:
            self._spawn(f"watch-{watch.account}-{watch.mailbox}", self._watch, watch)
        self._spawn("sender", self._sender)

    def _spawn(self, name, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop: each thread finishes what it has in hand (a message, an SMTP transaction), then the connections
        close."""
        self.stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for box in self._sent_boxes.values():
            box.close()
        self._sent_boxes.clear()
        self.log("stop", alive=[t.name for t in self._threads if t.is_alive()])
        self.ledger.close()

    def alive(self) -> bool:
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    # --- watching ---------------------------------------------------------------------------------------------------

    def _connect(self, account: Account) -> imap.Mailbox:
        return imap.Mailbox(account.imap_host, account.imap_port, account.imap_security, account.user,
                            self.passwords[account.name], use_idle=self.use_idle)

    def _watch(self, watch: Watch) -> None:
        account, backoff = self.accounts[watch.account], imap.Backoff()
        while not self.stop.is_set():
            box = None
            try:
                box = self._connect(account)
                validity = box.select(watch.mailbox)
                known = self.ledger.mailbox_state(account.name, watch.mailbox)
                last = known[1] if known and known[0] == validity else 0
                if known and known[0] != validity:
                    self.log("uidvalidity", account=account.name, mailbox=watch.mailbox, old=known[0], new=validity)
                watch.connected, watch.error = True, None
                backoff.reset()
                while not self.stop.is_set():
                    for uid in box.uids_above(last):
                        if self.stop.is_set():
                            break
                        message = box.fetch(uid, self.config.limits.max_message_bytes)
                        if message is not None:
                            self.process(account, watch.mailbox, validity, message)
                        last = uid
                        self.ledger.set_mailbox_state(account.name, watch.mailbox, validity, last)
                    self.ledger.set_mailbox_state(account.name, watch.mailbox, validity, last)
                    watch.last_poll = time.time()
                    limits = self.config.limits
                    box.wait(limits.idle_seconds if box.can_idle else limits.poll_seconds, self.stop)
            except Exception as error:  # noqa: BLE001 - IMAP errors, and anything else: reconnect after a while
                watch.connected, watch.error = False, f"{type(error).__name__}: {error}"[:500]
                watch.reconnects += 1
                delay = backoff.next()
                self.log("imap_error", account=account.name, mailbox=watch.mailbox, error=watch.error,
                         retry_in=round(delay, 2))
                self.stop.wait(delay)
            finally:
                if box is not None:
                    box.close()
                watch.connected = False

    # --- processing -------------------------------------------------------------------------------------------------

    def process(self, account: Account, mailbox: str, uidvalidity: int, message: imap.Message) -> Item | None:
        """Take one fetched message as far as it goes (None: already known). Never raises for the message's
        content: whatever goes wrong is the item's state and reason."""
        message_id = header_message_id(message.header, message.raw)
        item = self.ledger.add(account.name, mailbox, uidvalidity, message.uid, message_id, raw=message.raw)
        if item is None:
            return None
        self.log("seen", id=item.id, account=account.name, mailbox=mailbox, uid=message.uid, message_id=message_id,
                 size=message.size)
        if message.raw is None:
            limit = self.config.limits.max_message_bytes
            return self._set(item.id, "quarantined", f"too large: {message.size} bytes (limit {limit})")
        return self.advance(item.id)

    def resume(self) -> None:
        """Items a previous run left in "seen" or "triaged" (it stopped mid-message) go on from there."""
        for item in reversed(self.ledger.items(["seen", "triaged"], limit=10_000)):
            self.log("resume", id=item.id, state=item.state)
            self.advance(item.id)

    def advance(self, id: int) -> Item:
        """seen -> triaged -> drafted (-> approved when policy allows auto-send), or skipped / quarantined /
        failed with the reason."""
        item = self.ledger.get(id)
        account = self.accounts.get(item.account)
        raw = self.ledger.raw(id)
        if account is None or raw is None:
            return self._set(id, "failed", "its account is no longer in the config" if account is None
                             else "the message's bytes were not kept")
        try:
            email = parse_email(raw, *self.parse_limits)
        except Unparseable as error:
            return self._set(id, "quarantined", f"unparseable: {error}")
        try:
            with self._model_lock:
                return self._draft(item, account, email)
        except Exception as error:  # noqa: BLE001 - one message's failure stays with its item
            self.log("error", id=id, error=f"{type(error).__name__}: {error}"[:500])
            try:
                return self._set(id, "failed", f"{type(error).__name__}: {str(error)[:300]}")
            except InvalidTransition:  # it moved on meanwhile (e.g. rejected): leave it where it is
                return self.ledger.get(id)

    def _draft(self, item: Item, account: Account, email: Email) -> Item:
        from apps.email_bot import drafting

        described = {"sender": email.sender[:320], "subject": email.subject[:500], "original": email.full_text}
        if item.state == "seen":
            recent = self.ledger.sent_count_from(email.sender) if email.sender else 0
            verdict = triage(email, self.config, self.llm, recent)
            described |= {"label": verdict.label, "urgency": verdict.urgency, "confidence": verdict.confidence}
            if verdict.action in ("skip", "quarantine"):
                state = "skipped" if verdict.action == "skip" else "quarantined"
                return self._set(item.id, state, verdict.reason, **described)
            item = self._set(item.id, "triaged", verdict.reason, **described)
        else:
            verdict = Triage("draft", item.reason or "", item.label, item.urgency, item.confidence)
        draft = drafting.draft_reply(email, self.thread(item.account, email), self.config, self.llm, self.kb,
                                     self.past)
        if draft.body is None:
            return self._set(item.id, "skipped", f"no draft: {draft.reason}")
        message_id = drafting.new_message_id(account)
        try:
            reply = drafting.build_reply(email, draft.body, account, self.config.policy, message_id)
        except ValueError as error:  # drafting.NoRecipient: no address a reply may go to
            return self._set(item.id, "skipped", f"no recipient: {error}")
        item = self._set(item.id, "drafted", draft.reason, draft=draft.body, sources=draft.sources,
                         reply_message_id=message_id, reply=reply)
        if self.config.policy.save_drafts_to_imap:
            self._save_draft(account, reply)
        if drafting.may_auto_send(email, verdict, self.config.policy, draft):
            item = self._set(item.id, "approved", f"auto-send: {verdict.label} ({verdict.confidence}) from an "
                             "allowlisted sender")
            self._wake.set()
        return item

    def thread(self, account: str, email: Email) -> list[Email]:
        """The conversation's earlier messages the ledger holds (theirs, and our replies), oldest first."""
        ids = [i for i in [*email.references, email.in_reply_to] if i][-20:]
        earlier = []
        for item in self.ledger.find(account, ids):
            for raw in (self.ledger.raw(item.id) if item.message_id in ids else None,
                        item.reply if item.reply_message_id in ids and item.state == "sent" else None):
                if raw:
                    with contextlib.suppress(Unparseable):
                        earlier.append(parse_email(raw, *self.parse_limits))
        return earlier

    def _save_draft(self, account: Account, reply: bytes) -> None:
        """A copy of the draft in the account's Drafts folder (best effort: the ledger has it either way)."""
        box = None
        try:
            box = self._connect(account)
            box.append(account.drafts_folder, reply, flags=(rb"\Draft",))
        except imap.ERRORS as error:
            self.log("drafts_folder_error", account=account.name, error=f"{type(error).__name__}: {error}")
        finally:
            if box is not None:
                box.close()

    def _set(self, id: int, state: str, reason: str | None = None, **fields) -> Item:
        item = self.ledger.set_state(id, state, reason, **fields)
        self.log("state", id=id, state=state, reason=reason, label=item.label)
        return item

    # --- sending ----------------------------------------------------------------------------------------------------

    def _sender(self) -> None:
        resolved = False
        while not self.stop.is_set():
            try:
                resolved = resolved or self.resolve_sending()
                if resolved:
                    self.send_due()
            except Exception as error:  # noqa: BLE001 - the sender keeps going; the item in hand says what failed
                self.log("sender_error", error=f"{type(error).__name__}: {error}"[:500])
            self._wake.wait(SENDER_TICK)
            self._wake.clear()

    def resolve_sending(self) -> bool:
        """Items left in "sending" by a previous run: "sent" if their reply is in Sent, else "approved" again.
        False while some account's IMAP cannot be asked (try again later)."""
        done = True
        for item in self.ledger.items("sending", limit=10_000):
            account = self.accounts.get(item.account)
            if account is None:
                self._set(item.id, "failed", "its account is no longer in the config")
                continue
            try:
                found = self._sent_box(account).has_message_id(account.sent_folder, item.reply_message_id)
            except imap.ERRORS as error:
                self._drop_sent_box(account)
                self.log("resolve_error", id=item.id, error=f"{type(error).__name__}: {error}")
                done = False
                continue
            if found:
                self._set(item.id, "sent", f"found {item.reply_message_id} in {account.sent_folder} after a restart")
            else:
                self._set(item.id, "approved", f"{item.reply_message_id} not in {account.sent_folder} after a "
                          "restart: sending again (same Message-ID)")
        return done

    def send_due(self) -> int:
        """Send every approved item that is due; returns how many were tried."""
        tried = 0
        for item in self.ledger.due():
            if self.stop.is_set():
                break
            self.send(item)
            tried += 1
        return tried

    def send(self, item: Item) -> Item:
        from apps.email_bot import drafting

        account = self.accounts.get(item.account)
        if account is None:
            return self._set(item.id, "failed", "its account is no longer in the config")
        try:
            email = parse_email(self.ledger.raw(item.id) or b"", *self.parse_limits)
            recipient = drafting.reply_recipient(email, account, self.config.policy)
            reply = item.reply or drafting.build_reply(email, item.draft or "", account, self.config.policy,
                                                       item.reply_message_id or drafting.new_message_id(account))
        except (Unparseable, ValueError) as error:
            return self._set(item.id, "failed", f"cannot build the reply: {error}")
        message_id = item.reply_message_id or header_message_id(reply, reply)
        attempt = item.attempts + 1
        try:  # written and synced before the transaction: a crash from here on is resolved through Sent
            self.ledger.set_state(item.id, "sending", f"attempt {attempt}", expect="approved", attempts=attempt,
                                  reply=reply, reply_message_id=message_id)
        except InvalidTransition:  # rejected meanwhile (the CLI, the UI)
            return self.ledger.get(item.id)
        self.log("sending", id=item.id, to=recipient, message_id=message_id, attempt=attempt)
        outcome = smtp.send(account.smtp_host, account.smtp_port, account.smtp_security, account.user,
                            self.passwords[account.name], account.address, recipient, reply)
        detail = f"{outcome.code or ''} {outcome.detail}".strip()[:500]
        if outcome.status == "sent":
            if self._crash == "after-smtp":
                os._exit(137)
            return self._set(item.id, "sent", f"{detail}; {self._copy_to_sent(account, reply)}")
        if outcome.status == "failed":
            return self._set(item.id, "failed", f"SMTP refused: {detail}")
        if attempt >= MAX_ATTEMPTS:
            return self._set(item.id, "failed", f"gave up after {attempt} attempts: {detail}")
        delay = min(self.retry_cap, self.retry_first * 2 ** (attempt - 1))
        return self._set(item.id, "approved", f"SMTP retry in {delay:.1f} s: {detail}",
                         next_attempt_at=time.time() + delay)

    def _copy_to_sent(self, account: Account, reply: bytes) -> str:
        try:
            self._sent_box(account).append(account.sent_folder, reply)
            return f"copied to {account.sent_folder}"
        except imap.ERRORS as error:
            self._drop_sent_box(account)
            self.log("sent_folder_error", account=account.name, error=f"{type(error).__name__}: {error}")
            return f"not copied to {account.sent_folder}: {type(error).__name__}"

    def _sent_box(self, account: Account) -> imap.Mailbox:
        box = self._sent_boxes.get(account.name)
        if box is not None:
            try:
                box.client.noop()
                return box
            except imap.ERRORS:
                self._drop_sent_box(account)
        box = self._sent_boxes[account.name] = self._connect(account)
        return box

    def _drop_sent_box(self, account: Account) -> None:
        box = self._sent_boxes.pop(account.name, None)
        if box is not None:
            box.close()

    # --- the queue's actions and the numbers --------------------------------------------------------------------

    def redraft(self, id: int) -> Item:
        """Draft item `id` again (drafted or rejected), as the queue's "re-draft" button asks."""
        from apps.email_bot import drafting

        item = self.ledger.get(id)
        if item.state not in ("drafted", "rejected"):
            raise InvalidTransition(f"item {id} is {item.state}: only a drafted or rejected item is re-drafted")
        account = self.accounts[item.account]
        email = parse_email(self.ledger.raw(id) or b"", *self.parse_limits)
        with self._model_lock:
            draft = drafting.draft_reply(email, self.thread(item.account, email), self.config, self.llm, self.kb,
                                         self.past)
        if draft.body is None:
            raise ValueError(f"no draft: {draft.reason}")
        message_id = item.reply_message_id or drafting.new_message_id(account)
        reply = drafting.build_reply(email, draft.body, account, self.config.policy, message_id)
        return self._set(id, "drafted", f"re-drafted: {draft.reason}", draft=draft.body, sources=draft.sources,
                         reply_message_id=message_id, reply=reply)

    def metrics(self) -> dict:
        return {"counts": self.ledger.counts(), "last_poll": self.ledger.last_poll(),
                "uptime_s": round(time.time() - self.started, 1),
                "watchers": [vars(watch) for watch in self.watches]}


# --- the process ------------------------------------------------------------------------------------------------


def http_app(service: Service, ui=None):
    """/healthz (200 while every thread runs, else 503), /metrics (JSON), and the approval queue at / when `ui`
    (ui.build_ui's Blocks) is given."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI(title="llmkit email")

    @app.get("/healthz")
    def healthz():
        ok = service.alive() and not service.stop.is_set()
        body = {"ok": ok, "watchers": [{"account": w.account, "mailbox": w.mailbox, "connected": w.connected}
                                       for w in service.watches]}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    def metrics():
        return service.metrics()

    if ui is not None:
        from apps.email_bot.ui import mount

        app = mount(app, ui)
    return app


def start_http(service: Service, port: int, host: str = "127.0.0.1", ui=None):
    """Serve `http_app` on host:port in a thread; returns the uvicorn Server (set `should_exit` to stop it)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(http_app(service, ui), host=host, port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, name="http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise RuntimeError(f"the HTTP server did not start on {host}:{port}")
    server.thread = thread
    return server


def build_queue_ui(service: Service):
    """The approval queue over this service's ledger; "Try it" takes the model lock the service loop takes."""
    from apps.email_bot import ui

    return ui.build_ui(service.ledger, service.config, service.llm, service.redraft, kb=service.kb,
                       past=service.past, lock=service._model_lock)


def run(service: Service, ui_port: int | None = None) -> int:
    """Start `service` (and its HTTP side on `ui_port`), block until SIGTERM or SIGINT, stop cleanly; returns 0."""
    stop = service.stop

    def on_signal(signum, frame):
        service.log("signal", signal=signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    server = None
    try:
        service.start()
        if ui_port is not None:
            server = start_http(service, ui_port, ui=build_queue_ui(service))
            service.log("http", url=f"http://127.0.0.1:{ui_port}/")
            print(f"approval queue: http://127.0.0.1:{ui_port}/", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        if server is not None:
            server.should_exit = True
            server.thread.join(10)
        service.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def open_collection(name: str | None):
    if not name:
        return None
    from rag import Collection

    return Collection.open(name)


def serve(config: Config, ui_port: int | None = None) -> int:
    """`llmkit email serve`: load the model (config.model; None: the embedded default) and the collections once,
    then run the service until SIGTERM."""
    import core

    service = Service(config, None)  # reads the passwords first: a missing one fails before the model loads
    service.llm = core.load(config.model)
    service.kb, service.past = open_collection(config.knowledge_base), open_collection(config.past_replies)
    return run(service, ui_port)


def status(config: Config) -> dict:
    """`llmkit email status`: counts per state, the last poll, the oldest waiting draft; no server is asked."""
    path = ledger_path(config)
    if not path.exists():
        return {"ledger": str(path), "exists": False, "counts": {}, "last_poll": None, "waiting": 0,
                "accounts": [account.name for account in config.accounts]}
    ledger = Ledger(path)
    try:
        counts = ledger.counts()
        waiting = ledger.items("drafted", limit=10_000)
        return {"ledger": str(path), "exists": True, "counts": counts, "last_poll": ledger.last_poll(),
                "waiting": len(waiting), "oldest_waiting": min((i.received_at for i in waiting), default=None),
                "accounts": [account.name for account in config.accounts]}
    finally:
        ledger.close()
