"""`llmkit email`: offline triage of saved messages (a real process), the queue commands over a real ledger, and
the errors a user can cause as one `llmkit: ...` line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from apps.cli import main
from apps.email_bot.triage import LABELS

from conftest import save_tiny_checkpoint

ROOT = Path(__file__).parent.parent
FLANKER = Path(__file__).parent / "data" / "emails" / "flanker" / "tests" / "fixtures" / "messages"
CONFIG = """
state_dir = "state"

[[accounts]]
address = "support@example.com"
imap_host = "127.0.0.1"
imap_security = "plain"
smtp_host = "127.0.0.1"
smtp_security = "plain"
password_env = "LLMKIT_TEST_EMAIL_PW"
"""


def llmkit(*args: str) -> subprocess.CompletedProcess:
    """The command as a user runs it, importing this checkout's apps (python -m from the repository root)."""
    return subprocess.run([sys.executable, "-m", "apps.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def config_file(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "email.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_triage_prints_one_json_object_per_file_and_goes_on_past_a_missing_one(tmp_path):
    question = tmp_path / "question.eml"
    question.write_bytes(b"From: Bob <Bob@Customer.example>\r\nTo: support@example.com\r\nSubject: CSV\r\n"
                         b"Message-ID: <q1@customer.example>\r\n\r\nHow do I export my invoices to CSV?\r\n")
    files = [str(FLANKER / "bounce" / "zed.eml"), str(tmp_path / "missing.eml"), str(question),
             str(FLANKER / "torture.eml")]
    result = llmkit("email", "triage", "--json", "--no-model", *files)
    assert result.returncode == 1  # one file could not be read; the others were triaged
    assert result.stderr.strip() == "llmkit: 1 of 4 files could not be read"
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == files
    bounce, missing, plain, torture = lines
    assert bounce == {"file": files[0], "action": "skip", "reason": "auto-submitted: auto-replied (RFC 3834)",
                      "label": None, "urgency": None, "confidence": None,
                      "message_id": "<20090708054739.270231E8B13@mail.example.com>",
                      "subject": "Undelivered Mail Returned to Sender", "sender": "mailer-daemon@example.com.com"}
    assert missing == {"file": files[1], "error": "cannot read it: No such file or directory"}
    assert (plain["action"], plain["sender"], plain["message_id"]) == ("draft", "bob@customer.example",
                                                                       "<q1@customer.example>")
    assert torture["action"] == "draft" and torture["subject"].startswith("Multi-media mail demonstration")


@pytest.mark.slow  # loads torch and a model (~7 s)
def test_triage_with_a_model_labels_what_the_rules_pass(tmp_path, capsys):
    save_tiny_checkpoint("llama", tmp_path / "tiny")  # a random tiny model: some label, under constrained scores
    main(["email", "triage", "--json", "--model", str(tmp_path / "tiny"), str(FLANKER / "text-only.eml"),
          str(FLANKER / "bounce" / "delayed.eml")])
    plain, bounce = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert plain["label"] in LABELS and 0 < plain["confidence"] <= 1 and plain["urgency"] in ("low", "normal", "high")
    assert bounce["action"] == "skip" and bounce["label"] is None  # skipped by the rules: the model not asked


def test_triage_reads_our_addresses_from_the_config(tmp_path, capsys):
    ours = tmp_path / "ours.eml"
    ours.write_bytes(b"From: support@example.com\r\nSubject: hi\r\n\r\nHello\r\n")
    main(["email", "triage", "--no-model", "--config", str(config_file(tmp_path)), str(ours)])
    assert capsys.readouterr().out.strip() == f"{ours}: skip from our own address support@example.com (loop guard)"


def test_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["email", "status", "--config", str(tmp_path / "missing.toml")])
    assert exited.value.code == f"llmkit: {tmp_path / 'missing.toml'}: no such config file"
    bad = config_file(tmp_path, CONFIG.replace('imap_security = "plain"', 'imap_security = "tls"'))
    with pytest.raises(SystemExit) as exited:
        main(["email", "drafts", "--config", str(bad)])
    assert exited.value.code == "llmkit: accounts[0].imap_security: expected one of ssl, starttls, plain, not 'tls'"
    with pytest.raises(SystemExit) as exited:
        main(["email", "drafts", "--config", str(config_file(tmp_path))])
    assert exited.value.code.startswith(f"llmkit: there is no ledger at {tmp_path / 'state' / 'ledger.sqlite'} yet")
    with pytest.raises(SystemExit) as exited:  # argparse: --config is required
        main(["email", "serve"])
    assert exited.value.code == 2
    assert "--config" in capsys.readouterr().err


def test_the_queue_commands_over_a_real_ledger(tmp_path, capsys):
    ledger_module = pytest.importorskip("apps.email_bot.ledger")  # email-service's module
    path = config_file(tmp_path)
    ledger = ledger_module.Ledger(tmp_path / "state" / "ledger.sqlite")
    ids = []
    for uid in (1, 2):
        item = ledger.add("support@example.com", "INBOX", 7, uid, f"<m{uid}@customer.example>",
                          sender="bob@customer.example", subject=f"Question {uid}")
        ledger.set_state(item.id, "triaged", label="question", urgency="normal", confidence=0.9)
        ledger.set_state(item.id, "drafted", draft=f"Answer {uid}")
        ids.append(item.id)
    main(["email", "drafts", "--json", "--config", str(path)])
    drafts = json.loads(capsys.readouterr().out)["drafts"]
    assert sorted(d["id"] for d in drafts) == ids and {d["draft"] for d in drafts} == {"Answer 1", "Answer 2"}
    assert all("reply" not in d and d["label"] == "question" for d in drafts)
    edited = tmp_path / "edited.txt"
    edited.write_text("Edited answer", encoding="utf-8")
    main(["email", "approve", str(ids[0]), "--text", str(edited), "--config", str(path)])
    main(["email", "reject", str(ids[1]), "--reason", "wrong tone", "--config", str(path)])
    assert capsys.readouterr().out.splitlines() == [f"#{ids[0]} approved: the running service sends the reply",
                                                    f"#{ids[1]} rejected"]
    assert (ledger.get(ids[0]).state, ledger.get(ids[0]).draft) == ("approved", "Edited answer")
    assert (ledger.get(ids[1]).state, ledger.get(ids[1]).reason) == ("rejected", "wrong tone")
    for action, code in (("approve", "llmkit: there is no draft #99"), ("reject", "llmkit: there is no draft #99"),
                         ("approve", f"llmkit: item {ids[1]} is rejected")):
        with pytest.raises(SystemExit) as exited:
            main(["email", action, "99" if "#99" in code else str(ids[1]), "--config", str(path)])
        assert exited.value.code.startswith(code)


def test_triage_reads_one_message_from_stdin(monkeypatch, capsys):
    raw = (FLANKER / "bounce" / "delayed.eml").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    main(["email", "triage", "--json", "--no-model", "-"])
    out = json.loads(capsys.readouterr().out)
    assert (out["file"], out["action"]) == ("-", "skip") and out["reason"].startswith("delivery report")


def test_status_and_serve_reach_the_service(tmp_path, capsys, monkeypatch):
    pytest.importorskip("apps.email_bot.service")  # email-service's module
    path = config_file(tmp_path)
    main(["email", "status", "--json", "--config", str(path)])
    status = json.loads(capsys.readouterr().out)
    assert status["ledger"] == str(tmp_path / "state" / "ledger.sqlite") and status["accounts"] == [
        "support@example.com"]
    monkeypatch.delenv("LLMKIT_TEST_EMAIL_PW", raising=False)
    with pytest.raises(SystemExit) as exited:  # the passwords are read before anything loads or connects
        main(["email", "serve", "--config", str(path), "--ui-port", "0"])
    assert exited.value.code == ("llmkit: accounts[0].password_env: the environment variable LLMKIT_TEST_EMAIL_PW "
                                 "is not set (or empty)")
