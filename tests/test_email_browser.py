"""The approval queue in a real headless Chromium (Debian's, through Playwright): the page served from this process
over a real ledger holding two grounded drafts (made by `draft_reply` from a small knowledge base) and a skipped
newsletter; choosing a draft shows the original, the draft and its sources; an edited draft approved changes state
on the page and in the ledger; the log says why the newsletter was skipped; "Try it" drafts a pasted email.

Saves test-artifacts/email-queue.png (or under $LLMKIT_TEST_ARTIFACTS; 1440 px wide, a draft chosen): the README's
docs/email-queue.png is a copy.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest
from playwright.sync_api import expect
from test_email_drafting import FAQ, config, email

from apps.email_bot.drafting import draft_reply, new_message_id
from apps.email_bot.ledger import Ledger
from apps.email_bot.ui import build_ui
from core import ScriptedModel
from rag import Collection, TextItem

from conftest import ToyEmbedder

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("LLMKIT_TEST_ARTIFACTS", ROOT / "test-artifacts"))
DESKTOP = {"width": 1440, "height": 900}
QUESTIONS = [("Refund after a month?", "Hi, I got my order 3 weeks ago. How many days after delivery can I still ask "
                                       "for a refund, and when do I get the money back?\n\nThanks, Anna"),
             ("Express delivery to Italy", "Hello, what does express delivery to Italy cost?\n\nBest, Marco")]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(URL, ledger, collection): the queue page on a free loopback port, over a ledger with two drafts."""
    folder = tmp_path_factory.mktemp("queue")
    kb = Collection.open("kb", data_dir=folder, embedder=ToyEmbedder())
    assert all(r.ok for r in kb.add_texts([TextItem(name, text) for name, text in FAQ.items()]))
    cfg = config()
    ledger = Ledger(folder / "ledger.sqlite")
    for uid, (subject, text) in enumerate(QUESTIONS, start=1):
        sender = "Anna Schmidt <anna@customer.test>" if uid == 1 else "Marco Rossi <marco@cliente.test>"
        original = email(text, subject, sender=sender, message_id=f"<q{uid}@customer.test>")
        draft = draft_reply(original, [], cfg, ScriptedModel(["1"] * 3), kb)
        assert draft.found
        item = ledger.add("work", "INBOX", 1, uid, original.message_id, sender=original.sender, subject=subject,
                          original=original.full_text)
        ledger.set_state(item.id, "triaged", "classified question (0.93)", label="question", urgency="normal",
                         confidence=0.93)
        ledger.set_state(item.id, "drafted", draft.reason, draft=draft.body, sources=draft.sources,
                         reply_message_id=new_message_id(cfg.accounts[0]))
    news = ledger.add("work", "INBOX", 1, 3, "<n@list.test>", sender="news@list.test", subject="Our spring sale")
    ledger.set_state(news.id, "skipped", "list mail (List-Id)")
    llm = ScriptedModel(["question", "normal", "1"] * 5)

    def redraft(id):  # as the service's: a new draft for a drafted item, recorded in the ledger
        return ledger.set_state(id, "drafted", "re-drafted", draft=ledger.get(id).draft + "\n\n(re-drafted)")

    demo = build_ui(ledger, cfg, llm, redraft, kb=kb, refresh_seconds=1.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}", ledger
    demo.close()
    ledger.close()
    kb.close()


@pytest.fixture
def page(browser, served):
    page = browser.new_page(viewport=DESKTOP)
    page.goto(served[0])
    expect(row(page, "queue", "Express delivery to Italy")).to_have_count(1, timeout=60_000)
    yield page
    page.close()


def row(page, table: str, text: str):
    """The shown rows of table `table` holding `text` (not the hidden table gradio sizes the columns with)."""
    return page.locator(f"#{table} div[role=row]").filter(has_text=text)


def test_choose_a_draft_edit_it_and_approve_it(page, served):
    _, ledger = served
    expect(page.locator("#counts")).to_contain_text("2 waiting for approval · 1 skipped")
    page.get_by_test_id("cell-0-6").click()  # the oldest draft waiting: row 0, the subject column
    expect(page.locator("#item-status")).to_contain_text("#1 drafted")
    expect(page.locator("#original textarea")).to_have_value(
        "Hi, I got my order 3 weeks ago. How many days after delivery can I still ask for a refund, and when do I "
        "get the money back?\n\nThanks, Anna")
    draft = page.locator("#draft textarea")
    expect(draft).to_have_value(re.compile(r"^Hello Anna,\n\nThank you for your message\.\n\nHere is what we can "
                                           r"tell you:\n\nYou can ask for a refund within 30 days of delivery\."))
    expect(page.locator("#sources")).to_contain_text("kb: refunds.md")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "email-queue.png", full_page=True)

    edited = draft.input_value().replace("Hello Anna,", "Dear Anna,")
    draft.fill(edited)
    page.click("#approve")
    expect(page.locator("#item-status")).to_contain_text("#1 approved")
    expect(row(page, "queue", "Refund after a month?")).to_contain_text("approved")
    expect(page.locator("#counts")).to_contain_text("1 waiting for approval · 1 approved")
    item = ledger.get(1)
    assert (item.state, item.draft) == ("approved", edited.strip())

    page.click("#approve")  # approving it again is refused, and says why
    expect(page.get_by_text("item 1 is approved, not drafted")).to_be_visible(timeout=10_000)
    assert ledger.get(1).state == "approved"


def test_a_new_draft_shows_in_the_open_page_without_a_click(page, served):
    _, ledger = served
    item = ledger.add("work", "INBOX", 1, 9, "<q9@customer.test>", sender="lea@customer.test", subject="Gift card?",
                      original="Can I get my money back for a gift card?")
    ledger.set_state(item.id, "triaged", "classified question (0.90)", label="question", confidence=0.9)
    ledger.set_state(item.id, "drafted", "1 passage quoted", draft="Hello Lea,\n\nGift cards cannot be refunded.")
    expect(row(page, "queue", "Gift card?")).to_contain_text("drafted", timeout=10_000)


def test_re_draft_replaces_the_draft_on_the_page(page, served):
    page.locator("#item input").click()  # chosen in the item list this time
    page.get_by_role("option", name=re.compile("Express delivery to Italy")).click()
    expect(page.locator("#item-status")).to_contain_text("#2 drafted")
    page.click("#redraft")
    expect(page.locator("#item-status")).to_contain_text("re-drafted")
    expect(page.locator("#draft textarea")).to_have_value(re.compile(r"\(re-drafted\)$"))


def test_the_log_says_why_and_try_it_drafts_without_storing(page, served):
    _, ledger = served
    page.get_by_role("tab", name="Log").click()
    expect(row(page, "log", "Our spring sale")).to_contain_text("list mail (List-Id)")
    before = len(ledger.items())
    page.get_by_role("tab", name="Try it").click()
    page.fill("#paste textarea", "How many days after delivery can I ask for a refund?")
    page.click("#try")
    expect(page.locator("#try-verdict")).to_contain_text("draft", timeout=30_000)
    expect(page.locator("#try-draft textarea")).to_have_value(re.compile("within 30 days of delivery"))
    expect(page.locator("#try-sources")).to_contain_text("refunds.md")
    assert len(ledger.items()) == before
