"""The email service under faults, on the real loopback servers: IMAP restarted mid-run or a connection dropped in
IDLE, SMTP answering 451 / 550 or down, the process killed (-9) at random points and restarted, and a crash right
after the SMTP server accepted a reply. What must hold: no message lost, none answered twice, a 5xx not retried,
and the one duplicate a crash can cause carries the same Message-ID."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from email import message_from_bytes
from pathlib import Path

import pytest
from email_servers import PASSWORD, PASSWORD_ENV, account_table, question, services, wait_for

from apps.email_bot import ui
from apps.email_bot.ledger import Ledger
from apps.email_bot.service import status

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_service(tmp_path, mail_user, smtp_sink, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    with services(mail_user, smtp_sink, tmp_path / "state") as start:
        yield start


def drafted(service, count=1):
    return wait_for(lambda: len(items := service.ledger.items("drafted")) >= count and items,
                    what=f"{count} drafted item(s)")


def state_of(ledger, id, state, timeout=15.0):
    return wait_for(lambda: (item := ledger.get(id)).state == state and item, timeout=timeout,
                    what=f"item {id} in {state}")


def test_an_imap_restart_mid_run_loses_nothing_and_answers_nothing_twice(run_service, dovecot, mail_user):
    service = run_service()
    dovecot.deliver(mail_user, question("First: how do I reset my password?", "Password"))
    drafted(service)
    dovecot.restart()
    dovecot.deliver(mail_user, question("Second: how long does delivery take?", "Delivery"))
    items = drafted(service, 2)
    assert sorted(item.subject for item in items) == ["Delivery", "Password"]
    assert len(service.ledger.items()) == 2 and service.watches[0].reconnects >= 1
    wait_for(lambda: service.watches[0].connected, what="the watcher back in IDLE")


def test_a_connection_dropped_during_idle_reconnects_and_sees_new_mail(run_service, dovecot, mail_user):
    service = run_service()
    wait_for(lambda: service.watches[0].connected and service.watches[0].last_poll, what="the watcher in IDLE")
    time.sleep(0.3)
    dovecot.kick(mail_user)
    dovecot.deliver(mail_user, question("How long does delivery take?", "Delivery"))
    (item,) = drafted(service)
    assert item.subject == "Delivery" and service.watches[0].reconnects >= 1


@pytest.mark.parametrize("code", [451, 421])
def test_smtp_4xx_is_retried_and_then_sent_once(code, run_service, dovecot, mail_user, smtp_sink):
    service = run_service()
    smtp_sink.fail_next(code)
    dovecot.deliver(mail_user, question("How long does delivery take?", "Delivery"))
    (item,) = drafted(service)
    ui.approve(service.ledger, item.id)
    done = state_of(service.ledger, item.id, "sent")
    assert done.attempts == 2 and smtp_sink.handler.transactions == 2 and len(smtp_sink.received) == 1
    reasons = [event["reason"] for event in service.ledger.events(item.id)]
    assert any("SMTP retry" in (reason or "") and str(code) in reason for reason in reasons)


def test_smtp_550_fails_the_item_with_the_reason_and_is_not_retried(run_service, dovecot, mail_user, smtp_sink):
    service = run_service()
    smtp_sink.fail_next(550, times=3)
    dovecot.deliver(mail_user, question("How long does delivery take?", "Delivery"))
    (item,) = drafted(service)
    ui.approve(service.ledger, item.id)
    failed = state_of(service.ledger, item.id, "failed")
    assert "550" in failed.reason and "Mailbox unavailable" in failed.reason
    assert service.send_due() == 0  # nothing left to send: not retried
    assert smtp_sink.handler.transactions == 1 and smtp_sink.received == []
    assert status(service.config)["counts"]["failed"] == 1


def test_smtp_down_keeps_the_reply_until_the_server_is_back(run_service, dovecot, mail_user, smtp_sink):
    service = run_service()
    dovecot.deliver(mail_user, question("How long does delivery take?", "Delivery"))
    (item,) = drafted(service)
    smtp_sink.stop()
    ui.approve(service.ledger, item.id)
    wait_for(lambda: any("Connection" in (e["reason"] or "") for e in service.ledger.events(item.id)),
             what="a retry after connection refused")
    assert service.ledger.get(item.id).state in ("approved", "sending")
    smtp_sink.start()
    state_of(service.ledger, item.id, "sent")
    assert len(smtp_sink.received) == 1


def test_a_restart_resolves_sending_items_through_the_sent_folder(run_service, dovecot, mail_user, smtp_sink):
    """Two items left in "sending" (as a crash leaves them): the one whose reply is in Sent becomes "sent" without
    SMTP; the other is sent again, with the Message-ID fixed at drafting."""
    first = run_service()
    dovecot.deliver(mail_user, question("How long does delivery take?", "Delivery"))
    dovecot.deliver(mail_user, question("How do I reset my password?", "Password"))
    items = sorted(drafted(first, 2), key=lambda item: item.id)
    first.shutdown()
    ledger = Ledger(first.ledger.path)
    for item in items:
        ledger.approve(item.id)
        ledger.set_state(item.id, "sending", "attempt 1", attempts=1)
    dovecot.deliver(mail_user, items[0].reply, "Sent")
    ledger.close()
    second = run_service()
    in_sent = state_of(second.ledger, items[0].id, "sent")
    resent = state_of(second.ledger, items[1].id, "sent")
    assert "found" in in_sent.reason and in_sent.attempts == 1
    assert resent.attempts == 2
    (got,) = smtp_sink.received
    assert message_from_bytes(got.data)["Message-ID"] == items[1].reply_message_id


# --- the service as a process: kill -9, a crash after SMTP acceptance, SIGTERM -----------------------------------

DRIVER = """
import faulthandler, signal, sys
faulthandler.register(signal.SIGUSR1)  # the test dumps the threads' stacks into the log when the service hangs
from apps.email_bot.config import load_config
from apps.email_bot.service import Service, run
from core import ScriptedModel
service = Service(load_config(sys.argv[1]), ScriptedModel(["1"] * 100_000), retry_first=0.2)
sys.exit(run(service))
"""


def toml(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {toml(item)}" for key, item in value.items()) + "}"
    return json.dumps(value)  # strings, numbers, lists: JSON's spelling is TOML's


def write_config(path: Path, user, sink, state_dir: Path) -> Path:
    account = account_table(user, sink)
    lines = [f"state_dir = {toml(str(state_dir))}", "[limits]", "idle_seconds = 5.0", "poll_seconds = 0.5",
             "[[accounts]]", *(f"{key} = {toml(value)}" for key, value in account.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


class Process:
    """The service in a subprocess (scripted model), its log in a file."""

    def __init__(self, config: Path, log: Path, **env):
        self.log = log
        self.starts = self._starts()
        with open(log, "ab") as out:
            self.popen = subprocess.Popen([sys.executable, "-c", DRIVER, str(config)], cwd=ROOT, stdout=out,
                                          stderr=out, env={**os.environ, PASSWORD_ENV: PASSWORD, **env})

    def _starts(self) -> int:
        return self.log.read_text().count('"event": "start"') if self.log.exists() else 0

    def wait_started(self) -> None:
        """Until this process logged its "start" (its imports, ~3 s, are done)."""
        wait_for(lambda: self._starts() > self.starts or self.popen.poll() is not None, timeout=60,
                 what="the service's start")

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait(30)

    def terminate(self) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(60)


def replies_by_message_id(sink) -> Counter:
    return Counter(message_from_bytes(got.data)["Message-ID"] for got in sink.received)


def kill_loop(seed: int, rounds: int, messages: int, tmp_path, dovecot, mail_user, smtp_sink) -> None:
    """Deliver `messages` questions over `rounds` runs of the service, each killed with SIGKILL at a random moment
    while the test approves whatever is drafted (from its own process, as the CLI would); then one last run until
    every reply is sent, stopped with SIGTERM."""
    rng = random.Random(seed)
    state, log = tmp_path / "state", tmp_path / "service.log"
    config = write_config(tmp_path / "email.toml", mail_user, smtp_sink, state)
    ledger = Ledger(state / "ledger.sqlite")
    subjects = [f"Question {n}" for n in range(messages)]
    pending = list(subjects)

    def deliver(subject):  # each from its own customer: one sender's sixth message in an hour would be rate-limited
        n = subject.split()[1]
        dovecot.deliver(mail_user, question("How long does delivery take?", subject,
                                            sender=f"Customer {n} <customer{n}@customer.test>"))

    def approve_drafted():
        for item in ledger.items("drafted"):
            with contextlib.suppress(ValueError):  # it moved on meanwhile
                ui.approve(ledger, item.id)

    for _ in range(rounds):
        process = Process(config, log)
        for _ in range(min(len(pending), rng.randint(1, 3))):
            deliver(pending.pop(0))
        process.wait_started()
        deadline = time.monotonic() + rng.uniform(0.0, 1.5)  # killed while it processes, drafts or sends
        while time.monotonic() < deadline:
            approve_drafted()
            time.sleep(rng.uniform(0.0, 0.1))
        process.kill()
    for subject in pending:
        deliver(subject)
    process = Process(config, log)
    try:
        def all_sent():
            approve_drafted()
            return ledger.counts()["sent"] == messages
        try:
            wait_for(all_sent, timeout=60, interval=0.1, what=f"{messages} replies sent")
        except AssertionError:
            process.popen.send_signal(signal.SIGUSR1)
            time.sleep(1)
            raise AssertionError(f"not all sent: {ledger.counts()}; log:\n{log.read_text()[-6000:]}") from None
    finally:
        assert process.terminate() == 0
    items = ledger.items(limit=1000)
    assert sorted(item.subject for item in items) == sorted(subjects)  # each message once: none lost, none twice
    sent = replies_by_message_id(smtp_sink)
    assert set(sent) == {item.reply_message_id for item in items}
    for item in items:  # twice only where a crash fell between the server's 250 and the Sent copy
        resent = any("not in Sent after a restart" in (e["reason"] or "") for e in ledger.events(item.id))
        assert sent[item.reply_message_id] == 1 or (resent and sent[item.reply_message_id] == 2), item
    senders = {item.reply_message_id: item.sender for item in items}
    assert all(got.rcpt_tos == [senders[message_from_bytes(got.data)["Message-ID"]]] for got in smtp_sink.received)
    ledger.close()


def test_kill_9_at_random_points_then_restart_loses_and_duplicates_nothing(tmp_path, dovecot, mail_user, smtp_sink):
    kill_loop(0, 2, 4, tmp_path, dovecot, mail_user, smtp_sink)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 6))
def test_kill_9_over_many_seeds(seed, tmp_path, dovecot, mail_user, smtp_sink):
    kill_loop(seed, 4, 8, tmp_path, dovecot, mail_user, smtp_sink)


def test_a_crash_right_after_smtp_acceptance_resends_with_the_same_message_id(tmp_path, dovecot, mail_user,
                                                                              smtp_sink):
    state, log = tmp_path / "state", tmp_path / "service.log"
    config = write_config(tmp_path / "email.toml", mail_user, smtp_sink, state)
    crashing = Process(config, log, LLMKIT_EMAIL_CRASH="after-smtp")
    dovecot.deliver(mail_user, question("How long does delivery take?", "Delivery"))
    ledger = Ledger(state / "ledger.sqlite")
    (item,) = wait_for(lambda: ledger.items("drafted"), timeout=30, what="the draft")
    ui.approve(ledger, item.id)
    assert crashing.popen.wait(30) == 137  # died after the server's 250, before the Sent copy and "sent"
    assert len(smtp_sink.received) == 1 and ledger.get(item.id).state == "sending"
    restarted = Process(config, log)
    try:
        done = state_of(ledger, item.id, "sent", timeout=30)
    finally:
        assert restarted.terminate() == 0  # SIGTERM: a clean stop
    assert replies_by_message_id(smtp_sink) == Counter({item.reply_message_id: 2})  # the duplicate is recognisable
    assert done.attempts == 2
    assert any("not in Sent after a restart" in (e["reason"] or "") for e in ledger.events(item.id))
    assert len(dovecot.messages(mail_user, "Sent")) == 1
    ledger.close()
