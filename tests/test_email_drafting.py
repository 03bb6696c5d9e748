"""Reply drafts and reply messages: the draft's facts are knowledge-base sentences the model chose, kept with their
sources; nothing relevant gives "we don't know" or no draft; the reply is threaded, "Re:" is not stacked, it goes to
the sender only, and auto-send needs every condition. Fast tests use a scripted model and the toy embedder over a
real rag Collection; the last ones run the embedded MiniLM and SmolLM2 (slow)."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP
from email.policy import default as default_policy

import pytest

from apps.email_bot.config import parse_config
from apps.email_bot.drafting import (
    MAX_REFERENCES,
    PHRASES,
    build_reply,
    detect_language,
    draft_reply,
    new_message_id,
    reply_subject,
)
from apps.email_bot.parse import parse_email
from apps.email_bot.policy import NoRecipient, may_auto_send, reply_recipient
from apps.email_bot.triage import Triage
from core import RemoteLLM, ScriptedModel
from rag import Collection, TextItem

from conftest import SERVED_MODEL, ToyEmbedder

OURS = "support@shop.test"
FAQ = {
    "refunds.md": "Refunds\nYou can ask for a refund within 30 days of delivery. Refunds are paid back to the card "
                  "you paid with within 5 business days. Gift cards cannot be refunded.",
    "shipping.md": "Shipping\nWe ship to Germany, France, Spain and Italy. Standard delivery takes 3 to 5 business "
                   "days. Express delivery arrives the next business day and costs 9 euros.",
    "passwords.md": "Accounts\nTo reset your password, open the login page and click Forgot password. The reset link "
                    "in the email stays valid for 24 hours.",
}
SENTENCES = [s for text in FAQ.values() for s in text.split("\n", 1)[1].split(". ")]
PAST = {
    "reply-1042.txt": "Hi Marta,\nOur warehouse in Lyon packs orders placed before 2 pm on the same day. "
                      "Write to marta.k@customer.test if anything is missing.\nBest, the Shop team",
}


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    """The knowledge base ("kb", three FAQ pages) and the past replies ("past"), on the toy embedder."""
    data_dir = tmp_path_factory.mktemp("email-home")
    kb = Collection.open("kb", data_dir=data_dir, embedder=ToyEmbedder())
    past = Collection.open("past", data_dir=data_dir, embedder=ToyEmbedder())
    assert all(r.ok for r in kb.add_texts([TextItem(name, text) for name, text in FAQ.items()]))
    assert all(r.ok for r in past.add_texts([TextItem(name, text) for name, text in PAST.items()]))
    yield kb, past
    kb.close()
    past.close()


def config(**policy):
    return parse_config({"accounts": [{"name": "work", "address": OURS, "imap_host": "127.0.0.1",
                                       "smtp_host": "127.0.0.1", "user": "u", "password_env": "X",
                                       "aliases": ["help@shop.test"]}],
                         "policy": {"signature": "The Shop support team", **policy}})


def email(text: str, subject: str = "Question", sender: str = "Anna Schmidt <anna@customer.test>",
          **headers) -> object:
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = OURS
    message["Subject"] = subject
    message["Message-ID"] = headers.pop("message_id", "<q1@customer.test>")
    message["Date"] = "Mon, 02 Mar 2026 10:00:00 +0000"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(text)
    return parse_email(message.as_bytes())


def reply_of(raw: bytes):
    return message_from_bytes(raw, policy=default_policy)


def test_a_draft_quotes_the_knowledge_base_sentence_the_model_chose_with_its_source(collections):
    kb, past = collections
    llm = ScriptedModel(["1"])
    draft = draft_reply(email("Hi, how many days after delivery can I ask for a refund?", "Refund"), [], config(),
                        llm, kb, past)
    assert draft.found and draft.body is not None
    assert "You can ask for a refund within 30 days of delivery." in draft.body
    assert draft.body.startswith("Hello Anna,\n\nThank you for your message.")
    chosen = draft.sources[0]
    assert (chosen["collection"], chosen["source"], chosen["used"]) == ("kb", "refunds.md", True)
    assert all(source["quote"] in draft.body for source in draft.sources)  # every quote is in the draft, verbatim
    assert all(draft.body.count(sentence) <= 1 for sentence in SENTENCES)  # quotes overlap: each sentence once
    (call,) = llm.calls  # one model call: the choice, constrained to the passages' numbers
    assert call.options["choices"] == [str(n) for n in range(1, len(call.options["choices"]) + 1)]
    assert "refund" in call.prompt[1]["content"]


def test_the_model_choice_decides_which_passage_leads(collections):
    kb, _ = collections
    text = "How long does standard or express delivery take to Spain?"
    first = draft_reply(email(text), [], config(), ScriptedModel(["1"]), kb)
    llm = ScriptedModel(["2"])
    second = draft_reply(email(text), [], config(), llm, kb)
    listed = llm.calls[0].prompt[1]["content"]
    assert second.sources[0]["quote"].split()[:3] == listed.split("\n2. ")[1].split()[:3]
    assert first.sources[0]["quote"] != second.sources[0]["quote"]
    assert all(d.body.count(sentence) <= 1 for d in (first, second) for sentence in SENTENCES)


@pytest.mark.parametrize("kb_given", [True, False])
def test_nothing_relevant_says_we_do_not_know_without_asking_the_model(collections, kb_given):
    kb, past = collections
    llm = ScriptedModel([])
    draft = draft_reply(email("Do you sell bicycles with blue frames?", "Bikes"), [], config(), llm,
                        kb if kb_given else None, past if kb_given else None)
    assert (draft.found, llm.calls) == (False, [])
    assert PHRASES["en"]["unknown"] in draft.body
    assert not any(sentence in draft.body for text in FAQ.values() for sentence in text.split(". ")[1:])
    assert all(not source["used"] for source in draft.sources)  # the closest passages, shown as not used


def test_a_model_that_refuses_leaves_the_best_scored_passage(collections):
    kb, _ = collections
    llm = ScriptedModel(["1"], context_length=20)  # the choice's prompt does not fit: ContextLengthError
    draft = draft_reply(email("How many days after delivery can I ask for a refund?"), [], config(), llm, kb)
    assert draft.found and "the model refused" in draft.reason
    assert "You can ask for a refund within 30 days of delivery." in draft.body


def test_an_empty_email_asks_nothing(collections):
    kb, past = collections
    draft = draft_reply(email("", subject=""), [], config(), ScriptedModel([]), kb, past)
    assert (draft.found, draft.searches) == (False, [])
    assert PHRASES["en"]["unknown"] in draft.body


def test_nothing_relevant_with_policy_skip_makes_no_draft(collections):
    kb, past = collections
    draft = draft_reply(email("Do you sell bicycles with blue frames?"), [], config(no_answer="skip"),
                        ScriptedModel([]), kb, past)
    assert (draft.body, draft.found) == (None, False)
    assert "skip" in draft.reason


def test_past_replies_are_quoted_but_not_their_greetings_or_addresses(collections):
    kb, past = collections
    draft = draft_reply(email("Until what time can I order so the warehouse packs it the same day?"), [], config(),
                        ScriptedModel(["1"] * 3), kb, past)
    assert draft.found
    assert "Our warehouse in Lyon packs orders placed before 2 pm on the same day." in draft.body
    assert draft.sources[0]["collection"] == "past"
    assert "marta" not in draft.body.lower()  # another customer's name and address stay out


def test_our_earlier_reply_in_the_thread_is_a_source_and_the_customers_words_only_search(collections):
    kb, _ = collections
    earlier = email("How do I reset my password?", message_id="<q0@customer.test>")
    ours = email("The reset link works for one day only, after which you request a new one.",
                 sender=f"Shop <{OURS}>", message_id="<r0@shop.test>")
    follow_up = email("It expired. What now?", "Re: Question", in_reply_to="<r0@shop.test>")
    alone = draft_reply(follow_up, [], config(), ScriptedModel(["1"] * 3), kb)
    draft = draft_reply(follow_up, [earlier, ours], config(), ScriptedModel(["1"] * 3), kb)
    assert not alone.found and draft.found
    assert (draft.sources[0]["collection"], draft.sources[0]["locator"]) == ("thread", "<r0@shop.test>")
    assert "The reset link works for one day only" in draft.body
    assert "How do I reset my password?" not in draft.body  # the customer's words: searched for, never quoted
    assert "How do I reset my password?" in draft.searches[0]


def test_the_sender_language_sets_the_fixed_wording():
    assert detect_language("Hallo, ich habe eine Frage zu meiner Bestellung. Wie kann ich das Passwort ändern?") == "de"
    assert detect_language("Bonjour, je voudrais savoir comment changer mon mot de passe, merci") == "fr"
    assert detect_language("Hola, no puedo cambiar mi contraseña, gracias por la ayuda") == "es"
    assert detect_language("How do I reset my password?") == "en"
    assert detect_language("12345 ???") == "en"


def test_a_german_email_gets_a_german_frame_around_the_quotes(collections):
    kb, _ = collections
    draft = draft_reply(email("Hallo, wie kann ich mein password reset machen? Ich habe den Link nicht mehr.",
                              sender="Jonas Weber <jonas@kunde.test>"), [], config(), ScriptedModel(["1"] * 3), kb)
    assert draft.language == "de"
    assert draft.body.startswith("Hallo Jonas,\n\nVielen Dank für Ihre Nachricht.")
    assert draft.body.rstrip().endswith("Mit freundlichen Grüßen,")


def test_a_served_model_searches_with_the_agent_tools_first(collections):
    kb, past = collections
    steps = [{"tool": "search_knowledge_base", "arguments": {"query": "express delivery price"}},
             {"tool": "final_answer", "arguments": {"answer": "Express costs 9 euros."}}, "1"]
    llm = ScriptedModel(steps)
    draft = draft_reply(email("What does express delivery to Italy cost?", "Express delivery"), [], config(), llm, kb,
                        past, agent=True)
    assert draft.searches[0] == "search_knowledge_base('express delivery price')"
    assert "Express delivery arrives the next business day and costs 9 euros." in draft.body
    assert "Express costs 9 euros." not in draft.body  # the agent's own words are never the draft


# --- the reply message ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subject, expected", [
    ("Refund", "Re: Refund"), ("Re: Refund", "Re: Refund"), ("RE: Re: re: Refund", "Re: Refund"),
    ("Aw: AW: Refund", "Re: Refund"), ("Re[2]: Refund", "Re: Refund"), ("SV: Antw: Refund", "Re: Refund"),
    ("Fwd: Refund", "Re: Fwd: Refund"), ("Re: Fwd: Refund", "Re: Fwd: Refund"), ("", "Re: your message"),
    ("Refund\r\nBcc: x@evil.test", "Re: Refund Bcc: x@evil.test"), ("Ref: order 12", "Re: order 12"),
])
def test_re_is_not_stacked(subject, expected):
    assert reply_subject(subject) == expected


def test_the_reply_is_threaded_signed_quoted_and_goes_to_the_sender_only():
    cfg = config()
    original = email("How long is the reset link valid?\n\nThanks, Anna", "RE: Password",
                     references="<a@customer.test> <b@shop.test>", cc="colleague@customer.test")
    message_id = new_message_id(cfg.accounts[0])
    reply = reply_of(build_reply(original, "Hello Anna,\n\nIt is valid for 24 hours.", cfg.accounts[0], cfg.policy,
                                 message_id))
    assert (reply["From"], reply["To"], reply["Subject"]) == (OURS, "anna@customer.test", "Re: Password")
    assert (reply["Message-ID"], reply["In-Reply-To"]) == (message_id, "<q1@customer.test>")
    assert reply["References"].split() == ["<a@customer.test>", "<b@shop.test>", "<q1@customer.test>"]
    assert reply["Auto-Submitted"] == "auto-replied" and reply["Date"]
    assert reply["Cc"] is None and reply["Bcc"] is None
    assert message_id.endswith("@shop.test>")
    body = reply.get_content().replace("\r\n", "\n")
    assert body.startswith("Hello Anna,\n\nIt is valid for 24 hours.\n\n-- \nThe Shop support team\n\n")
    assert "anna@customer.test wrote:\n> How long is the reset link valid?" in body


def test_without_references_the_parent_is_taken_from_in_reply_to():
    cfg = config()
    reply = reply_of(build_reply(email("x", in_reply_to="<p@shop.test>"), "Hi", cfg.accounts[0], cfg.policy,
                                 "<n@shop.test>"))
    assert reply["References"].split() == ["<p@shop.test>", "<q1@customer.test>"]


def test_references_are_bounded_keeping_the_first_and_the_newest():
    cfg = config(quote=False, signature="")
    refs = " ".join(f"<r{n}@customer.test>" for n in range(60))
    reply = reply_of(build_reply(email("x", references=refs), "Hi", cfg.accounts[0], cfg.policy, "<n@shop.test>"))
    ids = reply["References"].split()
    assert len(ids) == MAX_REFERENCES
    assert ids[0] == "<r0@customer.test>" and ids[-2:] == ["<r59@customer.test>", "<q1@customer.test>"]
    assert reply.get_content().strip() == "Hi"  # no quote, no signature when the policy says so


def test_a_signature_with_its_own_delimiter_gets_no_second_one():
    cfg = config(signature="-- \nThe Example support team", quote=False)
    reply = reply_of(build_reply(email("x"), "Hi", cfg.accounts[0], cfg.policy, "<n@shop.test>"))
    assert reply.get_content().replace("\r\n", "\n") == "Hi\n\n-- \nThe Example support team\n"


def test_a_bad_message_id_is_refused():
    cfg = config()
    with pytest.raises(ValueError, match="Message-ID"):
        build_reply(email("x"), "Hi", cfg.accounts[0], cfg.policy, "<a@b>\r\nBcc: x@evil.test")


@pytest.mark.parametrize("sender, reply_to, allowed, expected", [
    ("anna@customer.test", None, [], "anna@customer.test"),
    ("anna@customer.test", "team@customer.test", [], "team@customer.test"),  # same domain: honoured
    ("anna@customer.test", "boss@evil.test", [], "anna@customer.test"),  # another domain: ignored
    ("anna@customer.test", "tickets@helpdesk.test", ["helpdesk.test"], "tickets@helpdesk.test"),  # allowlisted
    ("anna@customer.test", "x@evil-customer.test", [], "anna@customer.test"),  # not a suffix match
    ("anna@customer.test", OURS, [], "anna@customer.test"),  # never to ourselves
])
def test_reply_recipient_rules(sender, reply_to, allowed, expected):
    cfg = config(reply_to_domains=allowed)
    original = email("Hi", sender=sender, **({"reply_to": reply_to} if reply_to else {}))
    assert reply_recipient(original, cfg.accounts[0], cfg.policy) == expected
    reply = reply_of(build_reply(original, "Hi", cfg.accounts[0], cfg.policy, "<n@shop.test>"))
    assert reply.get_all("To") == [expected]


@pytest.mark.parametrize("sender", [f"Us <{OURS}>", "help@shop.test", "not an address", ""])
def test_no_reply_to_ourselves_or_to_no_address(sender):
    cfg = config()
    with pytest.raises(NoRecipient):
        reply_recipient(email("Hi", sender=sender), cfg.accounts[0], cfg.policy)


AUTO = {"mode": "auto", "auto_domains": ["customer.test"], "auto_senders": ["vip@other.test"],
        "auto_intents": ["question"], "min_confidence": 0.8}


@pytest.mark.parametrize("sender, label, confidence, policy, expected", [
    ("anna@customer.test", "question", 0.9, AUTO, True),
    ("vip@other.test", "question", 0.9, AUTO, True),  # an allowlisted address
    ("anna@customer.test", "question", 0.9, {**AUTO, "mode": "draft"}, False),  # draft-only mode
    ("eve@other.test", "question", 0.9, AUTO, False),  # not allowlisted
    ("eve@evil-customer.test", "question", 0.9, AUTO, False),  # a look-alike domain
    ("anna@customer.test", "complaint", 0.99, AUTO, False),  # not an auto intent
    ("anna@customer.test", "question", 0.79, AUTO, False),  # under the threshold
    ("anna@customer.test", "question", None, AUTO, False),  # no confidence (no model asked)
])
def test_auto_send_needs_allowlist_intent_and_confidence(sender, label, confidence, policy, expected):
    cfg = config(**policy)
    verdict = Triage("draft", "classified", label, "normal", confidence)
    assert may_auto_send(email("Hi", sender=sender), verdict, cfg.policy) is expected


def test_auto_send_waits_for_a_person_when_the_draft_says_we_do_not_know(collections):
    kb, _ = collections
    cfg = config(**AUTO)
    original = email("Do you sell bicycles with blue frames?")
    verdict = Triage("draft", "classified", "question", "normal", 0.95)
    unknown = draft_reply(original, [], cfg, ScriptedModel([]), kb)
    assert may_auto_send(original, verdict, cfg.policy) and not may_auto_send(original, verdict, cfg.policy, unknown)


# --- the real models -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_kb(tmp_path_factory, embedder):
    with Collection.open("kb", data_dir=tmp_path_factory.mktemp("email-real"), embedder=embedder) as kb:
        assert all(r.ok for r in kb.add_texts([TextItem(name, text) for name, text in FAQ.items()]))
        yield kb


@pytest.mark.parametrize("text, expected", [
    ("Hello, I forgot my password and cannot log in. How can I reset it?", "Forgot password"),
    ("How many days do I have to return my order and get my money back?", "30 days"),
    ("How much does express shipping cost?", "9 euros"),
])
def test_smollm2_and_minilm_draft_from_the_right_page(real_kb, llm, text, expected):
    draft = draft_reply(email(text), [], config(), llm, real_kb)
    assert draft.found, draft.reason
    assert expected in draft.body


def test_minilm_finds_nothing_for_an_unrelated_question(real_kb, llm):
    draft = draft_reply(email("Can you recommend a good pizza place in Rome for Saturday night?"), [], config(), llm,
                        real_kb)
    assert not draft.found and PHRASES["en"]["unknown"] in draft.body


def test_a_served_model_runs_the_agent_and_the_draft_is_still_quotes(real_kb, llm, served_url):
    remote = RemoteLLM(served_url, SERVED_MODEL, context_length=llm.context_length, timeout=120)
    draft = draft_reply(email("How much does express shipping cost?"), [], config(), remote, real_kb)
    assert len(draft.searches) > 3  # the agent's calls, then the email's own query's
    assert draft.found and "9 euros" in draft.body
    assert all(source["quote"] in draft.body for source in draft.sources if source["used"])
