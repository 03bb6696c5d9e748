"""The email service's config: the sample loads, every bad value is one error naming its key, and passwords come
only from an environment variable or a private file, never appearing in a repr, an error or a log line."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from apps.email_bot.config import ConfigError, load_config, password

SAMPLE = Path(__file__).parent.parent / "apps" / "email_bot" / "sample.toml"
SECRET = "hunter2-Sup3r-s3cret"

ACCOUNT = """
[[accounts]]
address = "Support@Example.com"
imap_host = "127.0.0.1"
imap_security = "plain"
smtp_host = "127.0.0.1"
smtp_security = "plain"
password_env = "LLMKIT_TEST_EMAIL_PW"
"""


def write(tmp_path: Path, text: str, name: str = "email.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return str(caught.value)


def test_the_sample_config_loads_with_its_defaults():
    config = load_config(SAMPLE)
    account = config.accounts[0]
    assert (account.name, account.address, account.imap_port, account.smtp_port) == (
        "support", "support@example.com", 993, 587)
    assert config.our_addresses == {"support@example.com", "help@example.com"}
    assert config.policy.mode == "draft" and config.policy.auto_intents == ["question"]
    assert config.limits.per_sender_per_hour == 5
    assert config.state_dir == SAMPLE.parent / "email-state"  # relative to the config's folder


def test_a_minimal_config_gets_defaults_and_lowercased_addresses(tmp_path):
    config = load_config(write(tmp_path, ACCOUNT))
    account = config.accounts[0]
    assert account.address == "support@example.com" and account.user == "support@example.com"
    assert (account.imap_port, account.smtp_port, account.mailboxes) == (143, 25, ["INBOX"])
    assert config.policy.mode == "draft" and config.policy.follow_ups is False
    assert config.knowledge_base is None and config.model is None


@pytest.mark.parametrize(("change", "expected"), [
    (ACCOUNT + "imap_port = \"993\"\n", "accounts[0].imap_port: expected an integer"),
    (ACCOUNT + "imap_port = 70000\n", "accounts[0].imap_port: expected a port number"),
    (ACCOUNT + "imap_hots = \"x\"\n", "accounts[0].imap_hots: unknown key"),
    (ACCOUNT + "mailboxes = \"INBOX\"\n", "accounts[0].mailboxes: expected a list"),
    (ACCOUNT + "aliases = [\"not-an-address\"]\n", "accounts[0].aliases[0]: 'not-an-address' is not an email"),
    (ACCOUNT + "password_file = \"pw\"\n", "accounts[0].password_env: give exactly one"),
    (ACCOUNT.replace("imap_host = \"127.0.0.1\"", "imap_host = \"imap.example.com\""),
     "accounts[0].imap_security: plain (no TLS) is allowed only on loopback"),
    (ACCOUNT.replace("smtp_host = \"127.0.0.1\"\n", ""), "accounts[0].smtp_host: missing"),
    (ACCOUNT + "[policy]\nmode = \"yolo\"\n", "policy.mode: expected one of draft, auto"),
    (ACCOUNT + "[policy]\nmin_confidence = 1.5\n", "policy.min_confidence: expected a number from 0 to 1"),
    (ACCOUNT + "[policy]\nauto_intents = [\"spam\"]\n", "policy.auto_intents[0]: expected one of"),
    (ACCOUNT + "[policy]\nquote = \"yes\"\n", "policy.quote: expected true or false"),
    (ACCOUNT + "[limits]\nper_sender_per_hour = 0\n", "limits.per_sender_per_hour: expected a positive number"),
    (ACCOUNT + "[limits]\nmax_message_bytes = 1.5\n", "limits.max_message_bytes: expected an integer"),
    ("knowledge_base = \"kb\"\n", "accounts: expected at least one [[accounts]] table"),
    ("colour = \"blue\"\n" + ACCOUNT, "colour: unknown key"),
    (ACCOUNT + ACCOUNT, "accounts[1].name: 'support@example.com' is already the name of another account"),
])
def test_a_bad_value_is_one_error_naming_its_key(tmp_path, change, expected):
    assert error_of(tmp_path, change).startswith(expected)


def test_bad_toml_and_a_missing_file_name_the_file(tmp_path):
    message = error_of(tmp_path, "[[accounts]\naddress = ")
    assert "email.toml: not valid TOML" in message
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")


def test_a_password_in_the_config_text_is_refused_without_echoing_it(tmp_path):
    message = error_of(tmp_path, ACCOUNT + f"password = \"{SECRET}\"\n")
    assert message.startswith("accounts[0].password: unknown key")
    assert SECRET not in message


def test_the_password_comes_from_the_environment_variable(tmp_path, monkeypatch):
    account = load_config(write(tmp_path, ACCOUNT)).accounts[0]
    monkeypatch.delenv("LLMKIT_TEST_EMAIL_PW", raising=False)
    with pytest.raises(ConfigError, match=r"accounts\[0\]\.password_env: the environment variable "
                                          "LLMKIT_TEST_EMAIL_PW is not set"):
        password(account)
    monkeypatch.setenv("LLMKIT_TEST_EMAIL_PW", SECRET)
    assert password(account) == SECRET


def test_a_password_file_must_be_private(tmp_path):
    secret_file = tmp_path / "imap.pw"
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    text = ACCOUNT.replace('password_env = "LLMKIT_TEST_EMAIL_PW"', 'password_file = "imap.pw"')
    account = load_config(write(tmp_path, text)).accounts[0]
    assert account.password_file == str(tmp_path / "imap.pw")  # relative to the config's folder
    for mode in (0o644, 0o640, 0o604):
        os.chmod(secret_file, mode)
        with pytest.raises(ConfigError) as caught:
            password(account)
        message = str(caught.value)
        assert message.startswith("accounts[0].password_file:") and str(secret_file) in message
        assert f"can be read by others (mode {mode:o})" in message and SECRET not in message
    os.chmod(secret_file, 0o600)
    assert password(account) == SECRET  # the trailing newline dropped
    secret_file.unlink()
    with pytest.raises(ConfigError, match="cannot open"):
        password(account)


def test_no_password_appears_in_any_repr_str_or_log_line(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("LLMKIT_TEST_EMAIL_PW", SECRET)
    secret_file = tmp_path / "smtp.pw"
    secret_file.write_text(SECRET, encoding="utf-8")
    os.chmod(secret_file, 0o600)
    second = ACCOUNT.replace("Support@", "sales@").replace('password_env = "LLMKIT_TEST_EMAIL_PW"',
                                                           'password_file = "smtp.pw"')
    config = load_config(write(tmp_path, ACCOUNT + second))
    assert [password(account) for account in config.accounts] == [SECRET, SECRET]
    logging.getLogger("apps.email_bot").info("loaded %s", config)
    shown = [repr(config), str(config), *map(repr, config.accounts), caplog.text]
    assert all(SECRET not in text for text in shown)
    assert "LLMKIT_TEST_EMAIL_PW" in repr(config)  # the variable's name is shown, its value never
