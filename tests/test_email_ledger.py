"""The email bot's ledger: its state machine, the event log, the Message-ID re-sync, and two processes at once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import pytest

from apps.email_bot.ledger import STATES, TRANSITIONS, InvalidTransition, Ledger


@pytest.fixture
def ledger(tmp_path):
    ledger = Ledger(tmp_path / "state" / "ledger.sqlite")
    yield ledger
    ledger.close()


def add(ledger, uid=1, message_id=None, **fields):
    return ledger.add("work", "INBOX", 7, uid, message_id or f"<m{uid}@example.test>", **fields)


def test_add_records_seen_once_and_keeps_fields(ledger):
    item = add(ledger, sender="ann@example.test", subject="Refunds?", raw=b"Subject: Refunds?\r\n\r\nhi")
    assert (item.state, item.sender, item.subject, item.uid, item.sources) == ("seen", "ann@example.test",
                                                                               "Refunds?", 1, [])
    assert add(ledger) is None  # same (account, mailbox, UIDVALIDITY, UID)
    assert ledger.raw(item.id) == b"Subject: Refunds?\r\n\r\nhi"
    assert [event["to"] for event in ledger.events(item.id)] == ["seen"]
    assert ledger.get(item.id) == item


def test_the_happy_path_is_recorded_event_by_event(ledger):
    item = add(ledger)
    ledger.set_state(item.id, "triaged", "question", label="question", urgency="normal", confidence=0.9)
    sources = [{"collection": "kb", "source": "refunds.md", "page": 1, "quote": "30 days"}]
    ledger.set_state(item.id, "drafted", "found in kb", draft="Within 30 days.", sources=sources,
                     reply_message_id="<r1@example.test>", reply=b"Subject: Re: x\r\n\r\nWithin 30 days.")
    ledger.approve(item.id)
    ledger.set_state(item.id, "sending", expect="approved", attempts=1)
    done = ledger.set_state(item.id, "sent", "250 OK")
    assert (done.label, done.confidence, done.sources, done.reply_message_id) == ("question", 0.9, sources,
                                                                                  "<r1@example.test>")
    assert done.reply == b"Subject: Re: x\r\n\r\nWithin 30 days." and done.attempts == 1
    events = ledger.events(item.id)
    assert [(e["from"], e["to"]) for e in events] == [(None, "seen"), ("seen", "triaged"), ("triaged", "drafted"),
                                                      ("drafted", "approved"), ("approved", "sending"),
                                                      ("sending", "sent")]
    assert events[1]["reason"] == "question" and events[-1]["reason"] == "250 OK"
    assert all(a["at"] <= b["at"] for a, b in zip(events, events[1:], strict=False))


@pytest.mark.parametrize("start, target", [("sent", "approved"), ("skipped", "drafted"), ("seen", "sent"),
                                           ("quarantined", "triaged"), ("failed", "sending"), ("triaged", "sent")])
def test_transitions_outside_the_machine_are_refused(ledger, start, target):
    item = add(ledger)
    path = {"sent": ["triaged", "drafted", "approved", "sending", "sent"], "skipped": ["skipped"], "seen": [],
            "quarantined": ["quarantined"], "failed": ["failed"], "triaged": ["triaged"]}[start]
    for state in path:
        ledger.set_state(item.id, state)
    with pytest.raises(InvalidTransition, match=f"{start} -> {target}"):
        ledger.set_state(item.id, target)
    assert ledger.get(item.id).state == start and len(ledger.events(item.id)) == len(path) + 1


def test_every_state_is_in_the_machine():
    assert set(TRANSITIONS) == set(STATES)
    assert all(targets <= set(STATES) for targets in TRANSITIONS.values())
    assert not any(TRANSITIONS[state] for state in ("sent", "skipped", "quarantined", "failed"))


def test_approve_with_an_edit_drops_the_built_reply_and_approve_twice_is_refused(ledger):
    item = add(ledger)
    ledger.set_state(item.id, "triaged")
    ledger.set_state(item.id, "drafted", draft="old", reply=b"old reply", reply_message_id="<r@x>")
    approved = ledger.approve(item.id, edited_draft="new text")
    assert (approved.state, approved.draft, approved.reply, approved.reply_message_id) == ("approved", "new text",
                                                                                           None, "<r@x>")
    with pytest.raises(InvalidTransition, match="not drafted"):
        ledger.approve(item.id)
    assert ledger.reject(item.id, "changed my mind").state == "rejected"
    assert ledger.events(item.id)[-1]["reason"] == "changed my mind"


def test_unknown_fields_and_states_are_errors(ledger):
    item = add(ledger)
    with pytest.raises(TypeError, match="password"):
        ledger.set_state(item.id, "triaged", password="x")
    with pytest.raises(InvalidTransition, match="unknown state"):
        ledger.set_state(item.id, "answered")
    with pytest.raises(KeyError):
        ledger.get(999)


def test_a_uidvalidity_change_resyncs_by_message_id_instead_of_answering_again(ledger):
    first = add(ledger, uid=5, message_id="<q@example.test>")
    ledger.set_state(first.id, "skipped", "list mail")
    assert ledger.add("work", "INBOX", 8, 1, "<q@example.test>") is None  # renumbered: UIDVALIDITY 7 -> 8
    moved = ledger.get(first.id)
    assert (moved.uidvalidity, moved.uid, moved.state) == (8, 1, "skipped")
    assert "UIDVALIDITY 7 -> 8" in ledger.events(first.id)[-1]["reason"]
    assert ledger.add("work", "Support", 3, 1, "<q@example.test>") is None  # the same message in a second mailbox
    assert ledger.add("other", "INBOX", 8, 1, "<q@example.test>") is not None  # another account's copy is its own
    assert len(ledger.items()) == 2


def test_queries_counts_due_and_the_per_sender_count(ledger):
    items = [add(ledger, uid=uid, sender="ann@example.test") for uid in range(1, 5)]
    for item in items[:3]:
        ledger.set_state(item.id, "triaged")
        ledger.set_state(item.id, "drafted", draft="d")
    ledger.approve(items[0].id)
    ledger.approve(items[1].id)
    ledger.set_state(items[1].id, "sending")
    ledger.set_state(items[1].id, "approved", "451 try later", next_attempt_at=time.time() + 60)
    assert [item.id for item in ledger.due()] == [items[0].id]
    assert [item.id for item in ledger.due(time.time() + 61)] == [items[0].id, items[1].id]
    counts = ledger.counts()
    assert (counts["approved"], counts["drafted"], counts["seen"], counts["sent"]) == (2, 1, 1, 0)
    assert ledger.sent_count_from("ann@example.test") == 3 and ledger.sent_count_from("bob@example.test") == 0
    assert [item.id for item in ledger.items("approved")] == [items[1].id, items[0].id]
    assert len(ledger.items(limit=2)) == 2


def test_mailbox_state_and_last_poll(ledger):
    assert ledger.mailbox_state("work", "INBOX") is None and ledger.last_poll() is None
    ledger.set_mailbox_state("work", "INBOX", 7, 12)
    ledger.set_mailbox_state("work", "INBOX", 7, 15)
    assert ledger.mailbox_state("work", "INBOX") == (7, 15) and ledger.last_poll() <= time.time()


def test_the_database_is_in_wal_mode(ledger):
    with sqlite3.connect(ledger.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


RACE = """
import sys, time
from apps.email_bot.ledger import InvalidTransition, Ledger
ledger = Ledger(sys.argv[1])
start = float(sys.argv[3])
while time.time() < start:
    time.sleep(0.001)
won = 0
for uid in range(40):
    ledger.add("work", "INBOX", 7, 1000 * int(sys.argv[2]) + uid, f"<p{sys.argv[2]}-{uid}@x>")
for id in range(1, 21):
    try:
        ledger.approve(id)
        won += 1
    except InvalidTransition:
        pass
print(won)
"""


def test_processes_adding_and_approving_at_once_lose_nothing_and_approve_once(ledger):
    """Like the CLI approving while the service works: 3 processes add 40 items each and all race to approve
    the same 20 drafted items; every add lands and each item is approved by exactly one of them."""
    for uid in range(1, 21):
        item = add(ledger, uid=uid)
        ledger.set_state(item.id, "triaged")
        ledger.set_state(item.id, "drafted", draft="d")
    start = time.time() + 1.0
    racers = [subprocess.Popen([sys.executable, "-c", RACE, str(ledger.path), str(n), str(start)],
                               stdout=subprocess.PIPE, text=True) for n in range(1, 4)]
    wins = [int(racer.communicate(timeout=60)[0]) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers)
    assert sum(wins) == 20
    assert ledger.counts()["approved"] == 20 and len(ledger.items(limit=1000)) == 20 + 3 * 40
    assert all(len(ledger.events(id)) == 4 for id in range(1, 21))  # seen, triaged, drafted, approved: once
