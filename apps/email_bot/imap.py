"""IMAP for the email bot (imapclient): watch a mailbox for new UIDs, fetch without marking anything seen, wait with
IDLE where the server has it (polling otherwise), and keep replies in Sent (and drafts in Drafts) so a restart can
tell whether a reply went out.

Messages are only ever read with BODY.PEEK and never flagged, moved or deleted: a message the bot cannot
understand stays on the server exactly as it came. Connection errors surface as `imap.ERRORS`; the caller
reconnects with `Backoff`.
"""

from __future__ import annotations

import contextlib
import imaplib
import random
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from imapclient.imapclient import _parse_untagged_response

ERRORS = (OSError, IMAPClientError, imaplib.IMAP4.error, imaplib.IMAP4.abort, socket.timeout, ssl.SSLError, EOFError)


class ConnectionLost(ConnectionError):
    """The server ended the session (BYE) or stopped answering."""


@dataclass
class Backoff:
    """Exponential backoff with jitter between reconnects: first, 2x first, ... up to `cap` seconds; `reset` after
    a success."""
    first: float = 0.5
    cap: float = 60.0
    attempt: int = 0

    def next(self) -> float:
        delay = min(self.cap, self.first * 2 ** self.attempt)
        self.attempt += 1
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class Message:
    uid: int
    size: int
    raw: bytes | None  # None when larger than the limit: only `header` was fetched
    header: bytes


class Mailbox:
    """One logged-in IMAP session for one account (`security`: "ssl" | "starttls" | "plain"). `use_idle=False`
    polls even where the server has IDLE."""

    def __init__(self, host: str, port: int, security: str, user: str, password: str, timeout: float = 30.0,
                 use_idle: bool = True):
        if security not in ("ssl", "starttls", "plain"):
            raise ValueError(f"imap security must be ssl, starttls or plain, not {security!r}")
        context = ssl.create_default_context() if security != "plain" else None
        self.client = IMAPClient(host, port, ssl=security == "ssl", ssl_context=context, timeout=timeout)
        try:
            if security == "starttls":
                self.client.starttls(context)
            self.client.login(user, password)
        except BaseException:
            self.close()
            raise
        self.can_idle = use_idle and b"IDLE" in self.client.capabilities()
        self.folder: str | None = None

    def close(self) -> None:
        """Log out, or just drop the socket when the session is already broken."""
        try:
            self.client.logout()
        except ERRORS:
            with contextlib.suppress(ERRORS):
                self.client.shutdown()

    def select(self, folder: str) -> int:
        """Select `folder` read-only; returns its UIDVALIDITY."""
        status = self.client.select_folder(folder, readonly=True)
        self.folder = folder
        return int(status[b"UIDVALIDITY"])

    def uids_above(self, last_uid: int) -> list[int]:
        """UIDs greater than `last_uid`, ascending (`N:*` also matches the highest UID when it is below N)."""
        return sorted(uid for uid in self.client.search(["UID", f"{last_uid + 1}:*"]) if uid > last_uid)

    def fetch(self, uid: int, max_bytes: int) -> Message | None:
        """The message with `uid` (None if it was expunged meanwhile); the body only when it fits `max_bytes`."""
        head = self.client.fetch([uid], ["RFC822.SIZE", "BODY.PEEK[HEADER]"]).get(uid)
        if head is None:
            return None
        size, header = int(head[b"RFC822.SIZE"]), bytes(head[b"BODY[HEADER]"] or b"")
        if size > max_bytes:
            return Message(uid, size, None, header)
        body = self.client.fetch([uid], ["BODY.PEEK[]"]).get(uid)
        return None if body is None else Message(uid, size, bytes(body[b"BODY[]"] or b""), header)

    def wait(self, seconds: float, stop: threading.Event) -> None:
        """Block until the server reports a change (IDLE) or `seconds` pass or `stop` is set; with no IDLE, sleep
        and send a NOOP. ConnectionLost when the server says BYE."""
        deadline = time.monotonic() + seconds
        # A message that arrived between our last SEARCH and now was announced (EXISTS) in the answer to an earlier
        # command, which imaplib keeps aside; IDLE would not announce it again, so look there first.
        if self._announced():
            return
        if not self.can_idle:
            stop.wait(seconds)
            self._check(self.client.noop()[1])
            return
        self.client.idle()
        try:
            while not stop.is_set() and not self._announced():  # also what came just before IDLE's "+ idling"
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                responses = self._buffered() or self.client.idle_check(timeout=min(0.25, remaining))
                self._check(responses)
                if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                    break
        finally:
            self._check(self.client.idle_done()[1])

    def _buffered(self) -> list:
        """Responses already read from the socket into imaplib's buffer (e.g. an EXISTS that came with IDLE's
        "+ idling"): `idle_check` polls the socket only, and would not see them until more data arrives."""
        sock, lines = self.client.socket(), []
        sock.setblocking(False)
        try:
            while True:
                try:
                    lines.append(_parse_untagged_response(self.client._imap._get_line()))
                except OSError:  # nothing more to read now (would block)
                    break
                except imaplib.IMAP4.abort as error:  # imaplib's "EOF" is an empty non-blocking read here
                    if "EOF" in str(error):
                        break
                    raise
        finally:
            sock.setblocking(True)
            self.client._set_read_timeout()
        return lines

    def _announced(self) -> bool:
        pending = self.client._imap.untagged_responses
        return bool(pending.pop("EXISTS", None) or pending.pop("RECENT", None))

    @staticmethod
    def _check(responses) -> None:
        for response in responses or ():
            if isinstance(response, tuple) and response and response[0] == b"BYE":
                raise ConnectionLost(" ".join(part.decode(errors="replace") if isinstance(part, bytes) else str(part)
                                              for part in response))

    def append(self, folder: str, raw: bytes, flags=(rb"\Seen",)) -> None:
        """Store `raw` in `folder` (a sent reply in Sent, a draft in Drafts with \\Draft)."""
        self.client.append(folder, raw, flags=flags)

    def has_message_id(self, folder: str, message_id: str) -> bool:
        """Whether a message with this Message-ID header is in `folder` (how a restart tells a reply went out).
        The current mailbox stays selected."""
        current = self.folder
        self.client.select_folder(folder, readonly=True)
        try:
            return bool(self.client.search(["HEADER", "Message-ID", message_id]))
        finally:
            if current is not None:
                self.client.select_folder(current, readonly=True)
