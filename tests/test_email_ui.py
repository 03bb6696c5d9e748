"""The approval queue's handlers over a real ledger (approve, reject, the tables the page shows) and "Try it" (triage
and a draft of a pasted email, nothing stored or sent); the page itself in tests/test_email_browser.py."""

from __future__ import annotations

import pytest
from test_email_drafting import FAQ, OURS, config

from apps.email_bot.ledger import Ledger
from apps.email_bot.ui import (
    MAX_DRAFT_CHARS,
    MAX_REASON_CHARS,
    TRY_SENDER,
    approve,
    item_status,
    log_rows,
    queue_rows,
    reject,
    sources_html,
    try_it,
)
from core import ScriptedModel
from rag import Collection, TextItem

from conftest import ToyEmbedder

SOURCES = [{"collection": "kb", "source": "refunds.md", "page": 1, "locator": "L1-2", "used": True,
            "quote": "You can ask for a refund within 30 days of delivery."}]


@pytest.fixture
def ledger(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    yield ledger
    ledger.close()


def drafted(ledger: Ledger, uid: int, subject: str = "Refund?", draft: str = "Hello,\n\nWithin 30 days.") -> int:
    item = ledger.add("work", "INBOX", 1, uid, f"<m{uid}@customer.test>", sender="anna@customer.test",
                      subject=subject, original="How long do I have for a refund?")
    ledger.set_state(item.id, "triaged", "classified question", label="question", urgency="normal", confidence=0.9)
    ledger.set_state(item.id, "drafted", "1 passage quoted", draft=draft, sources=SOURCES,
                     reply_message_id=f"<r{uid}@shop.test>")
    return item.id


def test_approve_moves_a_drafted_item_to_approved_once(ledger):
    id = drafted(ledger, 1)
    item = approve(ledger, id)
    assert (item.state, item.draft) == ("approved", "Hello,\n\nWithin 30 days.")
    assert [e["to"] for e in ledger.events(id)][-1] == "approved"
    with pytest.raises(ValueError, match="approved"):
        approve(ledger, id)  # twice: refused, nothing changes
    assert ledger.get(id).state == "approved"


def test_approve_with_an_edit_keeps_the_edit(ledger):
    id = drafted(ledger, 1)
    item = approve(ledger, id, "Hello Anna,\r\n\r\nYou have 30 days.  \n")
    assert (item.state, item.draft, item.reply_message_id) == ("approved", "Hello Anna,\n\nYou have 30 days.",
                                                               "<r1@shop.test>")


@pytest.mark.parametrize("text, message", [("  \n ", "empty"), ("x" * (MAX_DRAFT_CHARS + 1), "limit")])
def test_an_empty_or_oversized_edit_is_refused(ledger, text, message):
    id = drafted(ledger, 1)
    with pytest.raises(ValueError, match=message):
        approve(ledger, id, text)
    assert ledger.get(id).state == "drafted"


def test_reject_keeps_a_bounded_reason_and_refuses_a_sent_item(ledger):
    id = drafted(ledger, 1)
    item = reject(ledger, id, "  wrong\n answer " + "x" * 1000)
    assert item.state == "rejected" and item.reason.startswith("wrong answer x")
    assert len(item.reason) == MAX_REASON_CHARS
    other = drafted(ledger, 2)
    approve(ledger, other)
    ledger.set_state(other, "sending")
    ledger.set_state(other, "sent")
    with pytest.raises(ValueError):
        reject(ledger, other)
    with pytest.raises(KeyError):
        approve(ledger, 999)


def test_the_queue_lists_waiting_drafts_first_and_the_log_says_why(ledger):
    first, second = drafted(ledger, 1, "First"), drafted(ledger, 2, "Second")
    approve(ledger, first)
    skipped = ledger.add("work", "INBOX", 1, 3, "<m3@list.test>", sender="news@list.test", subject="Newsletter")
    ledger.set_state(skipped.id, "skipped", "list mail (List-Id)")
    rows = queue_rows(ledger)
    assert [(row[0], row[1], row[6]) for row in rows] == [(second, "drafted", "Second"), (first, "approved", "First")]
    assert rows[0][2:5] == ["question", "normal", "0.90"]
    assert [(row[0], row[1], row[2]) for row in log_rows(ledger)] == [(skipped.id, "skipped", "list mail (List-Id)")]


def test_what_the_page_shows_is_escaped():
    html = sources_html([{**SOURCES[0], "quote": "<script>alert(1)</script>", "used": False}])
    assert "<script>" not in html and "&lt;script&gt;" in html and "not used" in html
    assert "No sources" in sources_html([])
    assert "Choose an item" in item_status(None)


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    with Collection.open("kb", data_dir=tmp_path_factory.mktemp("try"), embedder=ToyEmbedder()) as kb:
        assert all(r.ok for r in kb.add_texts([TextItem(name, text) for name, text in FAQ.items()]))
        yield kb


def test_try_it_triages_and_drafts_a_pasted_text_without_storing_it(kb, tmp_path):
    llm = ScriptedModel(["question", "normal", "1"])  # the label, the urgency, the passage
    result = try_it("How many days after delivery can I ask for a refund?", config(), llm, kb)
    assert (result["action"], result["label"], result["urgency"]) == ("draft", "question", "normal")
    assert "You can ask for a refund within 30 days of delivery." in result["draft"]
    assert result["found"] and result["sources"][0]["source"] == "refunds.md"
    assert (result["recipient"], result["auto_send"]) == (TRY_SENDER, False)
    assert not list(tmp_path.iterdir())  # nothing written anywhere


def test_try_it_with_headers_uses_them_and_skips_an_auto_reply(kb):
    pasted = (f"From: Out of office <anna@customer.test>\nTo: {OURS}\nSubject: Automatic reply\n"
              "Auto-Submitted: auto-replied\n\nI am away until Monday.")
    result = try_it(pasted, config(), ScriptedModel([]), kb)
    assert result["action"] == "skip" and "auto" in result["reason"]
    assert result["sender"] == "anna@customer.test" and "draft" not in result


def test_try_it_takes_a_text_that_looks_like_a_header_for_a_body(kb):
    result = try_it("Question: how many days after delivery can I ask for a refund?", config(),
                    ScriptedModel(["question", "normal", "1"]), kb)
    assert result["sender"] == TRY_SENDER and result["found"]


@pytest.mark.parametrize("text", ["", "   ", "x" * 200_001])
def test_try_it_refuses_an_empty_or_huge_paste(text):
    with pytest.raises(ValueError):
        try_it(text, config(), ScriptedModel([]))
