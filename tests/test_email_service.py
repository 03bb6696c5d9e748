"""The email service end to end against real servers on loopback (Dovecot, an aiosmtpd sink): a question delivered
to the mailbox is triaged and drafted from the knowledge base, approved through the queue's handler, and arrives at
the SMTP server threaded, with the ledger recording each step. A scripted model; the toy embedder."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from email import message_from_bytes
from email.policy import default as default_policy

import pytest
from email_servers import PASSWORD, PASSWORD_ENV, free_port, question, services, wait_for

from apps.email_bot import ui
from apps.email_bot.ledger import Ledger
from apps.email_bot.service import JsonLog, build_queue_ui, header_message_id, start_http, status
from rag import Collection, TextItem

from conftest import ToyEmbedder

FAQ = {
    "refunds.md": "Refunds\nYou can ask for a refund within 30 days of delivery. Refunds are paid back to the card "
                  "you paid with within 5 business days. Gift cards cannot be refunded.",
    "shipping.md": "Shipping\nWe ship to Germany, France, Spain and Italy. Standard delivery takes 3 to 5 business "
                   "days. Express delivery arrives the next business day and costs 9 euros.",
}
REFUND_FACT = "You can ask for a refund within 30 days of delivery."


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    collection = Collection.open("kb", data_dir=tmp_path_factory.mktemp("email-kb"), embedder=ToyEmbedder())
    assert all(report.ok for report in collection.add_texts([TextItem(n, t) for n, t in FAQ.items()]))
    yield collection
    collection.close()


@pytest.fixture
def run_service(tmp_path, mail_user, smtp_sink, kb, monkeypatch):
    """Start a Service on the test servers (config overrides as keyword arguments); stopped after the test."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    with services(mail_user, smtp_sink, tmp_path / "state", kb) as start:
        yield start


def item_in(service, state, count=1):
    return wait_for(lambda: len(items := service.ledger.items(state)) >= count and items,
                    what=f"{count} item(s) in {state}")


def test_a_question_is_drafted_from_the_knowledge_base_approved_and_sent_threaded(run_service, dovecot, mail_user,
                                                                                 smtp_sink):
    service = run_service()
    raw = question("Hello, how many days after delivery can I still ask for a refund?\n\nAnna", "Refund question",
                   message_id="<q-refund@customer.test>", References="<earlier@customer.test>")
    dovecot.deliver(mail_user, raw)
    (item,) = item_in(service, "drafted")
    assert (item.sender, item.subject, item.mailbox, item.message_id) == ("anna@customer.test", "Refund question",
                                                                          "INBOX", "<q-refund@customer.test>")
    assert REFUND_FACT in item.draft and item.sources[0]["source"] == "refunds.md"
    assert item.label and item.confidence is not None and "how many days" in item.original
    assert smtp_sink.received == []  # draft-only by default: nothing goes out before approval

    ui.approve(service.ledger, item.id)  # the queue's handler
    wait_for(lambda: smtp_sink.received, what="the reply at the SMTP server")
    (got,) = smtp_sink.received
    reply = message_from_bytes(got.data, policy=default_policy)
    assert got.rcpt_tos == ["anna@customer.test"] and got.mail_from == mail_user.address
    assert reply["To"] == "anna@customer.test" and reply["Cc"] is None and reply["Bcc"] is None
    assert reply["Subject"] == "Re: Refund question"
    assert reply["In-Reply-To"] == "<q-refund@customer.test>"
    assert reply["References"].split() == ["<earlier@customer.test>", "<q-refund@customer.test>"]
    assert REFUND_FACT in reply.get_body(("plain",)).get_content()
    done = wait_for(lambda: (i := service.ledger.get(item.id)).state == "sent" and i)
    assert reply["Message-ID"] == done.reply_message_id and "copied to Sent" in done.reason
    assert [e["to"] for e in service.ledger.events(item.id)] == ["seen", "triaged", "drafted", "approved", "sending",
                                                                 "sent"]
    (sent_copy,) = dovecot.messages(mail_user, "Sent")
    assert message_from_bytes(sent_copy)["Message-ID"] == done.reply_message_id
    (original,) = dovecot.messages(mail_user, "INBOX")
    assert original == raw  # untouched on the server
    with dovecot.client(mail_user) as client:
        client.select_folder("INBOX", readonly=True)
        assert all(b"\\Seen" not in flags for flags in client.get_flags(client.search("ALL")).values())


def test_mail_that_must_not_be_answered_is_skipped_or_quarantined_and_left_on_the_server(run_service, dovecot,
                                                                                         mail_user, smtp_sink):
    service = run_service(limits={"max_message_bytes": 20_000})
    dovecot.deliver(mail_user, question("I am out of office.", "Out of office", Auto_Submitted="auto-replied"))
    dovecot.deliver(mail_user, question("News of the week", "Newsletter", List_Id="<news.customer.test>"))
    dovecot.deliver(mail_user, question("x" * 30_000, "Huge"))
    dovecot.deliver(mail_user, question("A reply to ourselves", "Loop", sender=mail_user.address))
    items = wait_for(lambda: len(found := service.ledger.items(["skipped", "quarantined"])) == 4 and found)
    reasons = {item.subject or item.uid: (item.state, item.reason) for item in items}
    assert reasons["Out of office"][0] == "skipped" and "auto" in reasons["Out of office"][1].lower()
    assert reasons["Newsletter"][0] == "skipped" and "list" in reasons["Newsletter"][1].lower()
    assert reasons[3] == ("quarantined", reasons[3][1]) and "too large" in reasons[3][1]
    assert reasons["Loop"][0] == "skipped"
    assert len(dovecot.messages(mail_user)) == 4 and smtp_sink.received == []


def test_auto_send_goes_out_without_approval_only_for_the_allowlist(run_service, dovecot, mail_user, smtp_sink):
    service = run_service(policy={"mode": "auto", "auto_domains": ["customer.test"],
                                  "auto_intents": ["question", "request", "complaint", "other"],
                                  "min_confidence": 0.0})
    dovecot.deliver(mail_user, question("How many days after delivery can I ask for a refund?", "Refund"))
    dovecot.deliver(mail_user, question("How many days after delivery can I ask for a refund?", "Refund",
                                        sender="Bob <bob@elsewhere.test>"))
    wait_for(lambda: len(smtp_sink.received) == 1 and service.ledger.counts()["drafted"] == 1,
             what="one auto-sent reply and one draft waiting")
    assert smtp_sink.received[0].rcpt_tos == ["anna@customer.test"]
    (waiting,) = service.ledger.items("drafted")
    assert waiting.sender == "bob@elsewhere.test"


def test_an_edited_draft_is_sent_as_edited_with_the_message_id_fixed_at_drafting(run_service, dovecot, mail_user,
                                                                                 smtp_sink):
    service = run_service()
    dovecot.deliver(mail_user, question("How long does express delivery take?", "Delivery"))
    (item,) = item_in(service, "drafted")
    ui.approve(service.ledger, item.id, "Express delivery arrives the next business day.")
    wait_for(lambda: smtp_sink.received)
    reply = message_from_bytes(smtp_sink.received[0].data, policy=default_policy)
    assert reply["Message-ID"] == item.reply_message_id
    assert reply.get_body(("plain",)).get_content().startswith("Express delivery arrives the next business day.")


def test_a_rejected_draft_is_never_sent_and_redraft_drafts_again(run_service, dovecot, mail_user, smtp_sink):
    service = run_service()
    dovecot.deliver(mail_user, question("How long does express delivery take?", "Delivery"))
    (item,) = item_in(service, "drafted")
    ui.reject(service.ledger, item.id, "wrong tone")
    again = service.redraft(item.id)
    assert again.state == "drafted" and again.reply_message_id == item.reply_message_id
    ui.reject(service.ledger, item.id, "still no")
    assert service.send_due() == 0
    assert smtp_sink.received == [] and service.ledger.get(item.id).state == "rejected"


def test_healthz_metrics_and_status(run_service, dovecot, mail_user, tmp_path):
    service = run_service()
    dovecot.deliver(mail_user, question("How long does express delivery take?", "Delivery"))
    item_in(service, "drafted")
    wait_for(lambda: all(watch.connected for watch in service.watches))
    port = free_port()
    server = start_http(service, port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            health = json.load(response)
        assert response.status == 200 and health["ok"] and health["watchers"][0]["connected"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            metrics = json.load(response)
        assert metrics["counts"]["drafted"] == 1 and metrics["last_poll"] > 0
        service.shutdown()
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert error.value.code == 503
    finally:
        server.should_exit = True
        server.thread.join(10)
    report = status(service.config)
    assert report["counts"]["drafted"] == 1 and report["waiting"] == 1 and report["accounts"] == ["work"]
    assert status(dataclasses.replace(service.config, state_dir=tmp_path / "empty"))["exists"] is False


def test_log_lines_are_json_and_never_hold_the_password(run_service, dovecot, mail_user, smtp_sink):
    stream = io.StringIO()
    service = run_service(log=JsonLog(stream))
    dovecot.deliver(mail_user, question("How long does express delivery take?", "Delivery"))
    (item,) = item_in(service, "drafted")
    ui.approve(service.ledger, item.id)
    wait_for(lambda: service.ledger.get(item.id).state == "sent")
    service.log("probe", detail=f"a server echoed {PASSWORD} back")  # a secret in an event is scrubbed too
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert {"start", "seen", "state", "sending", "probe"} <= {line["event"] for line in lines}
    assert PASSWORD not in stream.getvalue() and "[redacted]" in lines[-1]["detail"]


def test_without_idle_the_mailbox_is_polled(run_service, dovecot, mail_user):
    service = run_service(use_idle=False)
    wait_for(lambda: service.watches[0].last_poll, what="the first poll")
    dovecot.deliver(mail_user, question("How long does express delivery take?", "Delivery"))
    (item,) = item_in(service, "drafted")
    assert item.subject == "Delivery"


def test_a_uidvalidity_change_resyncs_by_message_id_and_answers_nothing_twice(run_service, dovecot, mail_user):
    service = run_service()
    dovecot.deliver(mail_user, question("How long does express delivery take?", "Delivery"))
    dovecot.deliver(mail_user, question("I am out of office.", "Away", Auto_Submitted="auto-replied"))
    wait_for(lambda: service.ledger.counts()["drafted"] == 1 and service.ledger.counts()["skipped"] == 1)
    (old,) = {item.uidvalidity for item in service.ledger.items()}
    dovecot.renumber(mail_user)
    dovecot.deliver(mail_user, question("How do I reset my password?", "Password"))
    items = wait_for(lambda: len(found := service.ledger.items()) == 3 and found[0].state == "drafted" and found)
    assert {item.uidvalidity for item in items} == {items[0].uidvalidity} != {old}
    assert sorted((item.subject, item.state) for item in items) == [("Away", "skipped"), ("Delivery", "drafted"),
                                                                    ("Password", "drafted")]
    for item in items[1:]:
        assert "re-synced by Message-ID" in service.ledger.events(item.id)[-1]["reason"]


@pytest.mark.slow  # imports gradio
def test_the_queue_ui_is_served_beside_healthz(run_service):
    service = run_service()
    port = free_port()
    server = start_http(service, port, ui=build_queue_ui(service))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert response.status == 200 and "gradio" in response.read().decode().lower()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert json.load(response)["ok"]
    finally:
        server.should_exit = True
        server.thread.join(10)


def test_drafts_can_also_go_to_the_imap_drafts_folder(run_service, dovecot, mail_user):
    service = run_service(policy={"save_drafts_to_imap": True})
    dovecot.deliver(mail_user, question("How long does express delivery take?", "Delivery"))
    (item,) = item_in(service, "drafted")
    (saved,) = wait_for(lambda: dovecot.messages(mail_user, "Drafts"), what="the draft in Drafts")
    assert message_from_bytes(saved)["Message-ID"] == item.reply_message_id
    with dovecot.client(mail_user) as client:
        client.select_folder("Drafts", readonly=True)
        assert all(b"\\Draft" in flags for flags in client.get_flags(client.search("ALL")).values())


def test_a_message_without_message_id_gets_a_stable_one_from_its_bytes():
    raw = b"From: a@customer.test\r\nSubject: hi\r\n\r\nbody\r\n"
    header = raw.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    made = header_message_id(header, raw)
    assert made == header_message_id(header, raw) and made.endswith("@llmkit.invalid>")
    assert made != header_message_id(header, raw + b"more\r\n")
    assert header_message_id(b"Message-ID:  <x@y.test> (comment)\r\n\r\n", None) == "<x@y.test>"


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            return json.load(response)["ok"]
    except OSError:  # not listening yet
        return False


@pytest.mark.slow  # the embedded SmolLM2, gradio
def test_llmkit_email_serve_drafts_with_the_embedded_model_and_stops_on_sigterm(tmp_path, dovecot, mail_user,
                                                                               smtp_sink):
    """The newcomer's path: `llmkit email serve --config FILE --ui-port N`, a question delivered, the draft in the
    ledger and the queue's page up, approval from the CLI, the reply at the SMTP server, SIGTERM -> exit 0."""
    from test_email_faults import write_config

    config, port = write_config(tmp_path / "email.toml", mail_user, smtp_sink, tmp_path / "state"), free_port()
    env = {**os.environ, PASSWORD_ENV: PASSWORD}
    command = [sys.executable, "-m", "apps.cli", "email"]
    process = subprocess.Popen([*command, "serve", "--config", str(config), "--ui-port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        dovecot.deliver(mail_user, question("How long does express delivery take?", "Delivery"))
        path = tmp_path / "state" / "ledger.sqlite"
        wait_for(path.exists, timeout=120, interval=0.5, what="the ledger")
        ledger = Ledger(path)
        (item,) = wait_for(lambda: ledger.items("drafted"), timeout=120, interval=0.5, what="the draft")
        assert wait_for(lambda: healthy(port), timeout=60, interval=0.5, what="/healthz")
        approved = subprocess.run([*command, "approve", str(item.id), "--config", str(config)], env=env,
                                  capture_output=True, text=True, timeout=120)
        assert approved.returncode == 0, approved.stderr
        wait_for(lambda: smtp_sink.received, timeout=30, what="the reply")
        assert smtp_sink.received[0].rcpt_tos == ["anna@customer.test"]
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert {"start", "seen", "sending", "signal", "stop"} <= {event["event"] for event in events}
    assert f"http://127.0.0.1:{port}/" in output and PASSWORD not in output


def test_the_benchmark_is_a_module_with_its_table(monkeypatch, capsys):
    import bench.email

    monkeypatch.setattr(sys, "argv", ["x", "--help"])
    with pytest.raises(SystemExit) as exit:
        bench.email.main()
    assert exit.value.code == 0 and "--results RESULTS" in capsys.readouterr().out
    figures = {"parse_triage": {"messages": 275, "distinct": 123, "per_minute": 3057,
                                "actions": {"draft": 105, "skip": 18}},
               "triage_draft": {"messages": 16, "per_minute": 96.1, "grounded": 16},
               "service": {"messages": 16, "p50_s": 1.31, "p95_s": 1.4, "max_s": 1.47, "rss_idle_mib": 801,
                           "rss_drafting_peak_mib": 942}}
    text = bench.email.table(figures)
    assert "| parse + triage (rules, no model) | 275 | 3,057 | 123 corpus messages: draft 105, skip 18 |" in text
    assert "| delivery -> draft p95 | 1.40 s |" in text and "| RSS while drafting (peak) | 942 MiB |" in text
    figures["service"] = {"skipped": "/usr/sbin/dovecot is missing"}
    assert "Service latency: skipped" in bench.email.table(figures)
