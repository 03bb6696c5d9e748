"""Real mail servers on loopback for the email bot's tests: Debian's Dovecot (IMAP) and aiosmtpd (an SMTP sink).

No protocol is mocked. Dovecot runs from a self-contained config in a temp dir (its own base_dir, state and
maildirs, a static passdb, plain auth, no TLS, a free port), once per session; each test gets a fresh user,
so an empty mailbox, by taking a name not used before. The SMTP sink is
aiosmtpd's in-process Controller; it keeps what it accepts and can be told to answer 451 / 550 / 421 to the next
transactions, or be stopped, so the service's retry and failure paths run against a real SMTP conversation.

tests/conftest.py loads this module as a plugin, so its fixtures are there for every test module.
"""

from __future__ import annotations

import contextlib
import grp
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DOVECOT = Path("/usr/sbin/dovecot")
DOVEADM = Path("/usr/bin/doveadm")
PASSWORD = "secret-pw-for-tests"

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 1
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u
}}
service imap-login {{
  chroot = {chroot}
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot = {chroot}
}}
namespace inbox {{
  inbox = yes
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
}}
"""


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, timeout: float = 10.0) -> None:
    """Return once something accepts connections on 127.0.0.1:port; RuntimeError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _children(pid: int) -> list[int]:
    """The PIDs whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


@dataclass
class MailUser:
    """One mailbox on the test Dovecot: what an account in the bot's config needs to reach it."""
    name: str
    password: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.name}@example.test"


@dataclass
class Dovecot:
    """A Dovecot master process serving IMAP on 127.0.0.1:port from the config under `root`."""
    root: Path
    port: int
    process: subprocess.Popen | None = None
    users: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def conf(self) -> Path:
        return self.root / "dovecot.conf"

    def write_config(self) -> None:
        """As root, mail runs as Dovecot's own unprivileged users (Dovecot refuses UID 0 for mail); as anyone
        else, everything runs as that user and its group, without chroot (the rootless layout Dovecot documents;
        checked by running this config as `nobody`)."""
        for sub in ("run", "state", "mail"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            mail = pwd.getpwnam("dovecot")
            login_user, internal_user, internal_group, chroot = "dovenull", "dovecot", "dovecot", "login"
            os.chown(self.root / "mail", mail.pw_uid, mail.pw_gid)
        else:
            mail = pwd.getpwuid(os.geteuid())
            login_user = internal_user = mail.pw_name
            internal_group, chroot = grp.getgrgid(mail.pw_gid).gr_name, ""
        self.uid, self.gid = mail.pw_uid, mail.pw_gid
        self.conf.write_text(CONFIG.format(root=self.root, port=self.port, login_user=login_user,
                                           internal_user=internal_user, internal_group=internal_group, chroot=chroot,
                                           password=PASSWORD, uid=self.uid, gid=self.gid))

    def start(self) -> None:
        log = open(self.root / "dovecot.stderr", "ab")  # noqa: SIM115 - the child keeps it open
        self.process = subprocess.Popen([str(DOVECOT), "-F", "-c", str(self.conf)], stdout=log, stderr=log)
        log.close()
        try:
            wait_listening(self.port)
        except RuntimeError as error:
            self.stop()
            raise RuntimeError(f"{error}; dovecot log:\n{self.log()}") from None

    def stop(self) -> None:
        """SIGTERM the master and then its children: every IMAP session ends (clients see the connection drop).
        The master alone would leave its imap processes serving their connections (seen with Dovecot 2.3)."""
        if self.process is None:
            return
        children = _children(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kick(self, user: MailUser) -> None:
        """Drop `user`'s IMAP connections (e.g. one in IDLE) while the server stays up."""
        subprocess.run([str(DOVEADM), "-c", str(self.conf), "kick", user.name], check=True,
                       capture_output=True, timeout=10)

    def renumber(self, user: MailUser) -> None:
        """Give the user's INBOX a new UIDVALIDITY (its messages get new UIDs), as a server rebuilding its index
        does: drop the maildir's UID list and index, and the user's sessions."""
        maildir = self.root / "mail" / user.name / "Maildir"
        for name in ("dovecot-uidlist", "dovecot.index", "dovecot.index.log", "dovecot.index.cache"):
            (maildir / name).unlink(missing_ok=True)
        time.sleep(1.05)  # UIDVALIDITY is the time in seconds: the next one must differ
        self.kick(user)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def add_user(self) -> MailUser:
        """A new user whose mailbox (INBOX, Sent, Drafts) is empty: the static passdb takes any name with the
        session's password, and a name not used before has no maildir yet. It logs in once, so the maildir
        exists before a test's first delivery (a delivery racing the creation can miss IDLE's notice)."""
        user = MailUser(f"user{next(self.users)}", PASSWORD, "127.0.0.1", self.port)
        with self.client(user) as client:
            client.select_folder("INBOX")
        return user

    def client(self, user: MailUser):
        from imapclient import IMAPClient
        client = IMAPClient(user.host, user.port, ssl=False, timeout=10)
        client.login(user.name, user.password)
        return client

    def deliver(self, user: MailUser, raw: bytes, folder: str = "INBOX") -> int:
        """Put `raw` in the user's `folder` by IMAP APPEND; returns its UID."""
        with self.client(user) as client:
            response = client.append(folder, raw)
        # UIDPLUS: b"[APPENDUID <uidvalidity> <uid>] Append completed."
        text = response.decode() if isinstance(response, bytes) else str(response)
        return int(text.split("APPENDUID", 1)[1].split()[1].rstrip("]"))

    def messages(self, user: MailUser, folder: str = "INBOX") -> list[bytes]:
        """Every message in `folder`, oldest first (BODY.PEEK: reading does not mark them seen)."""
        with self.client(user) as client:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            fetched = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
        return [fetched[uid][b"BODY[]"] for uid in sorted(fetched)]


@pytest.fixture(scope="session")
def dovecot():
    """One Dovecot for the session (start ~0.1 s); skipped with the reason when Dovecot is not installed."""
    if not DOVECOT.exists():
        pytest.skip(f"{DOVECOT} is missing: install Debian's dovecot-imapd (.ci/run does)")
    # Not under pytest's tmp dir: as root, Dovecot's auth and mail processes run as its own users and must reach
    # their maildirs, which pytest's 0700 folders would hide from them.
    root = Path(tempfile.mkdtemp(prefix="llmkit-dovecot-"))
    root.chmod(0o755)
    server = Dovecot(root, free_port())
    server.write_config()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def mail_user(dovecot) -> MailUser:
    """A fresh user on the session's Dovecot, so an empty mailbox for this test."""
    if dovecot.process is None:  # a test stopped it and failed before starting it again
        dovecot.start()
    return dovecot.add_user()


@dataclass
class Received:
    """One message the SMTP sink accepted: the envelope and the bytes, as sent."""
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


class SinkHandler:
    """aiosmtpd handler: answers the next queued fault codes to DATA, otherwise accepts and keeps the message."""
    REPLIES = {421: "421 4.3.2 Service shutting down", 451: "451 4.3.0 Try again later",
               550: "550 5.1.1 Mailbox unavailable"}

    def __init__(self):
        self.received: list[Received] = []
        self.faults: deque[int] = deque()
        self.transactions = 0

    async def handle_DATA(self, server, session, envelope):
        self.transactions += 1
        if self.faults:
            return self.REPLIES[self.faults.popleft()]
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 OK"


class SmtpSink:
    """An SMTP server on 127.0.0.1:port that stores what it accepts; `fail_next`, `stop` and `start` are the knobs."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.handler = SinkHandler()
        self.controller = None

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def fail_next(self, code: int, times: int = 1) -> None:
        """Answer `code` (421, 451 or 550) to the next `times` DATA commands."""
        if code not in SinkHandler.REPLIES:
            raise ValueError(f"no canned reply for {code}")
        self.handler.faults.extend([code] * times)

    def start(self) -> None:
        from aiosmtpd.controller import Controller
        if self.controller is None:
            self.controller = Controller(self.handler, hostname=self.host, port=self.port)
            self.controller.start()

    def stop(self) -> None:
        """Stop listening: clients get connection refused until `start` again."""
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp_sink():
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


# --- what the email bot's tests build on these servers ----------------------------------------------------------

PASSWORD_ENV = "LLMKIT_TEST_MAIL_PASSWORD"
CUSTOMER = "Anna Schmidt <anna@customer.test>"


def account_table(user: MailUser, sink: SmtpSink, **extra) -> dict:
    """The [[accounts]] table of a config for `user` on the test Dovecot and `sink`, plain on loopback."""
    return {"name": "work", "address": user.address, "imap_host": user.host, "imap_port": user.port,
            "imap_security": "plain", "smtp_host": sink.host, "smtp_port": sink.port, "smtp_security": "plain",
            "user": user.name, "password_env": PASSWORD_ENV, **extra}


@contextlib.contextmanager
def services(user: MailUser, sink: SmtpSink, state_dir, kb=None):
    """Yields `start(policy=None, limits=None, log=None, **options)`, which starts a Service (a scripted model that
    always picks "1", `kb` as its knowledge base) on these servers; every service started is stopped afterwards."""
    import io

    from apps.email_bot.service import JsonLog, Service
    from core import ScriptedModel

    started = []

    def start(policy=None, limits=None, log=None, **options):
        config = bot_config(user, sink, state_dir, policy, limits)
        service = Service(config, ScriptedModel(["1"] * 1000), kb, log=log or JsonLog(io.StringIO()),
                          retry_first=0.2, **options)
        service.start()
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in started:
            if not service.stop.is_set():
                service.shutdown()


def bot_config(user: MailUser, sink: SmtpSink, state_dir, policy=None, limits=None, **top):
    """A parsed Config (apps.email_bot.config) for the bot on these servers; fast polling, short IDLE."""
    from apps.email_bot.config import parse_config

    return parse_config({"accounts": [account_table(user, sink)], "state_dir": str(state_dir),
                         "policy": {"signature": "The support team", **(policy or {})},
                         "limits": {"idle_seconds": 5.0, "poll_seconds": 0.5, **(limits or {})}, **top})


def question(text: str, subject: str = "Question", sender: str = CUSTOMER, to: str = "support@example.test",
             message_id: str | None = None, **headers) -> bytes:
    """A customer's message as bytes (headers given as keyword arguments, `_` for `-`)."""
    from email.message import EmailMessage
    from email.policy import SMTP
    from email.utils import make_msgid

    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = "Mon, 02 Mar 2026 10:00:00 +0000"
    message["Message-ID"] = message_id or make_msgid(domain="customer.test")
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(text)
    return message.as_bytes()


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "the condition"):
    """Poll `predicate` until it returns something truthy (returned); AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
