"""The email service's TOML config: accounts, policy, limits, the collections answers come from.

Every bad value is one ConfigError whose message starts with the key it is about (`accounts[0].imap_port:
expected an integer`), and a key the config does not know is an error too (a typo must not silently fall back
to a default). Passwords never live in the config text: an account names an environment variable
(`password_env`) or a file only its owner can read (`password_file`, mode 0600), and `password(account)` is the
one place that reads them, so no dataclass here holds a password and none can end up in a repr or a log line.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from core import settings

SECURITY = ("ssl", "starttls", "plain")
IMAP_PORTS = {"ssl": 993, "starttls": 143, "plain": 143}
SMTP_PORTS = {"ssl": 465, "starttls": 587, "plain": 25}
INTENTS = ("question", "request", "complaint", "spam", "other")
MAX_PASSWORD_BYTES = 4096


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key (or the file) at fault."""


@dataclass
class Account:
    name: str
    address: str  # our address: the From of replies
    imap_host: str
    imap_port: int
    imap_security: str  # "ssl" | "starttls" | "plain" (plain: loopback only)
    smtp_host: str
    smtp_port: int
    smtp_security: str
    user: str
    password_env: str | None = None  # exactly one of the two
    password_file: str | None = None  # mode 0600
    mailboxes: list[str] = field(default_factory=lambda: ["INBOX"])
    sent_folder: str = "Sent"
    drafts_folder: str = "Drafts"
    aliases: list[str] = field(default_factory=list)  # other addresses of ours
    index: int = 0  # its place in the config, for error messages

    @property
    def addresses(self) -> set[str]:
        return {self.address, *self.aliases}


@dataclass
class Policy:
    mode: str = "draft"  # "draft": every reply waits for approval | "auto": see auto_*
    auto_senders: list[str] = field(default_factory=list)
    auto_domains: list[str] = field(default_factory=list)
    auto_intents: list[str] = field(default_factory=list)
    min_confidence: float = 0.8
    reply_to_domains: list[str] = field(default_factory=list)  # extra domains whose Reply-To we honour
    no_answer: str = "say"  # nothing relevant found: "say" (the draft says so) | "skip" (no draft)
    signature: str = ""
    quote: bool = True
    save_drafts_to_imap: bool = False
    follow_ups: bool = False  # answer replies to our replies (else a thread the bot answered goes to a person)


@dataclass
class Limits:
    max_message_bytes: int = 5_000_000
    max_text_chars: int = 8_000
    per_sender_per_hour: int = 5
    poll_seconds: float = 30.0
    idle_seconds: float = 300.0


@dataclass
class Config:
    accounts: list[Account]
    policy: Policy = field(default_factory=Policy)
    limits: Limits = field(default_factory=Limits)
    knowledge_base: str | None = None  # the rag collection answers come from
    past_replies: str | None = None  # the rag collection of our past sent replies
    state_dir: Path = field(default_factory=lambda: settings.data_dir() / "email")  # ledger.sqlite lives here
    model: str | None = None  # a --model spec; None: the embedded default

    @property
    def our_addresses(self) -> set[str]:
        return set().union(*(account.addresses for account in self.accounts))


# --- reading values -------------------------------------------------------------------------------------------------

def _check_keys(table: dict, known: set[str], where: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{_join(where, key)}: unknown key (known: {', '.join(sorted(known))})")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _get(table: dict, key: str, kind: str, where: str, default: Any = None) -> Any:
    """table[key] checked against `kind` (text, str, int, float, bool, list, address, addresses, domains), else
    `default`."""
    if key not in table:
        return default
    value, name = table[key], _join(where, key)
    if kind == "text":
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string")
        return value
    if kind in ("str", "address"):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{name}: expected a non-empty string")
        return _address(value, name) if kind == "address" else value.strip()
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name}: expected a number")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false")
        return value
    if kind in ("list", "addresses", "domains"):
        if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
            raise ConfigError(f"{name}: expected a list of non-empty strings")
        if kind == "addresses":
            return [_address(item, f"{name}[{i}]") for i, item in enumerate(value)]
        return [item.strip().lower().lstrip("@") if kind == "domains" else item.strip() for item in value]
    raise AssertionError(kind)


def _address(value: str, name: str) -> str:
    address = value.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() or c in "<>,;\"" for c in address):
        raise ConfigError(f"{name}: {value!r} is not an email address (expected user@domain)")
    return address


def _one_of(value: str, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{name}: expected one of {', '.join(allowed)}, not {value!r}")
    return value


def _port(table: dict, key: str, where: str, default: int) -> int:
    port = _get(table, key, "int", where, default)
    if not 0 < port < 65536:
        raise ConfigError(f"{_join(where, key)}: expected a port number (1-65535), not {port}")
    return port


def _positive(value: float, name: str) -> float:
    if value <= 0:
        raise ConfigError(f"{name}: expected a positive number, not {value}")
    return value


# --- the sections ---------------------------------------------------------------------------------------------------

ACCOUNT_KEYS = {f.name for f in fields(Account)} - {"index"}


def _account(table: Any, index: int, base: Path) -> Account:
    where = f"accounts[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table ([[accounts]])")
    _check_keys(table, ACCOUNT_KEYS, where)
    for key in ("address", "imap_host", "smtp_host"):
        if key not in table:
            raise ConfigError(f"{where}.{key}: missing (required)")
    address = _get(table, "address", "address", where)
    values: dict[str, Any] = {"address": address, "index": index}
    for proto, ports in (("imap", IMAP_PORTS), ("smtp", SMTP_PORTS)):
        host = _get(table, f"{proto}_host", "str", where)
        security = _one_of(_get(table, f"{proto}_security", "str", where, "ssl" if proto == "imap" else "starttls"),
                           SECURITY, f"{where}.{proto}_security")
        if security == "plain" and not settings.is_loopback(host):
            raise ConfigError(f"{where}.{proto}_security: plain (no TLS) is allowed only on loopback, and "
                              f"{proto}_host is {host!r}; use ssl or starttls")
        values |= {f"{proto}_host": host, f"{proto}_security": security,
                   f"{proto}_port": _port(table, f"{proto}_port", where, ports[security])}
    values["name"] = _get(table, "name", "str", where, address)
    values["user"] = _get(table, "user", "str", where, address)
    values["password_env"] = _get(table, "password_env", "str", where)
    password_file = _get(table, "password_file", "str", where)
    if (values["password_env"] is None) == (password_file is None):
        raise ConfigError(f"{where}.password_env: give exactly one of password_env (an environment variable's name) "
                          "and password_file (a file of mode 0600); a password never goes in the config itself")
    values["password_file"] = str(base / Path(password_file).expanduser()) if password_file else None
    values["mailboxes"] = _get(table, "mailboxes", "list", where, ["INBOX"])
    if not values["mailboxes"]:
        raise ConfigError(f"{where}.mailboxes: expected at least one mailbox")
    values["sent_folder"] = _get(table, "sent_folder", "str", where, "Sent")
    values["drafts_folder"] = _get(table, "drafts_folder", "str", where, "Drafts")
    values["aliases"] = _get(table, "aliases", "addresses", where, [])
    return Account(**values)


def _policy(table: Any) -> Policy:
    where = "policy"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table ([policy])")
    _check_keys(table, {f.name for f in fields(Policy)}, where)
    policy = Policy(
        mode=_one_of(_get(table, "mode", "str", where, "draft"), ("draft", "auto"), "policy.mode"),
        auto_senders=_get(table, "auto_senders", "addresses", where, []),
        auto_domains=_get(table, "auto_domains", "domains", where, []),
        auto_intents=_get(table, "auto_intents", "list", where, []),
        min_confidence=_get(table, "min_confidence", "float", where, 0.8),
        reply_to_domains=_get(table, "reply_to_domains", "domains", where, []),
        no_answer=_one_of(_get(table, "no_answer", "str", where, "say"), ("say", "skip"), "policy.no_answer"),
        signature=_get(table, "signature", "text", where, ""),
        quote=_get(table, "quote", "bool", where, True),
        save_drafts_to_imap=_get(table, "save_drafts_to_imap", "bool", where, False),
        follow_ups=_get(table, "follow_ups", "bool", where, False))
    for i, intent in enumerate(policy.auto_intents):
        if intent not in INTENTS or intent == "spam":
            raise ConfigError(f"policy.auto_intents[{i}]: expected one of question, request, complaint, other, "
                              f"not {intent!r}")
    if not 0.0 <= policy.min_confidence <= 1.0:
        raise ConfigError(f"policy.min_confidence: expected a number from 0 to 1, not {policy.min_confidence}")
    return policy


def _limits(table: Any) -> Limits:
    where = "limits"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table ([limits])")
    _check_keys(table, {f.name for f in fields(Limits)}, where)
    defaults = Limits()
    values = {}
    for f in fields(Limits):
        kind = "int" if isinstance(getattr(defaults, f.name), int) else "float"
        values[f.name] = _positive(_get(table, f.name, kind, where, getattr(defaults, f.name)), f"limits.{f.name}")
    return Limits(**values)


TOP_KEYS = {"accounts", "policy", "limits", "knowledge_base", "past_replies", "state_dir", "model"}


def parse_config(data: dict, base: Path = Path(".")) -> Config:
    """A Config from TOML already read (a dict); relative paths are taken from `base` (the config's folder)."""
    _check_keys(data, TOP_KEYS, "")
    accounts = data.get("accounts")
    if not isinstance(accounts, list) or not accounts:
        raise ConfigError("accounts: expected at least one [[accounts]] table")
    parsed = [_account(table, i, base) for i, table in enumerate(accounts)]
    names = [account.name for account in parsed]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"accounts[{i}].name: {name!r} is already the name of another account")
    state_dir = _get(data, "state_dir", "str", "", None)
    return Config(accounts=parsed, policy=_policy(data.get("policy", {})), limits=_limits(data.get("limits", {})),
                  knowledge_base=_get(data, "knowledge_base", "str", ""),
                  past_replies=_get(data, "past_replies", "str", ""),
                  state_dir=base / Path(state_dir).expanduser() if state_dir else settings.data_dir() / "email",
                  model=_get(data, "model", "str", ""))


def load_config(path: str | os.PathLike) -> Config:
    """The Config in a TOML file; ConfigError (naming the file or the key) for anything wrong with it."""
    path = Path(path).expanduser()
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read it ({error})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    return parse_config(data, path.resolve().parent)


def password(account: Account) -> str:
    """The account's password, from its environment variable or its 0600 file; ConfigError when it cannot be had.

    The only reader of passwords: callers pass the result straight to the IMAP/SMTP login and never keep or log it.
    A password file that its group or others may read is refused (as ssh refuses such a key): anyone who could
    read it has the mailbox.
    """
    where = f"accounts[{account.index}]"
    if account.password_env:
        value = os.environ.get(account.password_env)
        if not value:
            raise ConfigError(f"{where}.password_env: the environment variable {account.password_env} is not set "
                              "(or empty)")
        return value
    if not account.password_file:
        raise ConfigError(f"{where}.password_env: no password_env or password_file")
    name = account.password_file
    try:
        fd = os.open(name, os.O_RDONLY)
    except OSError as error:
        raise ConfigError(f"{where}.password_file: cannot open {name} ({error.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{where}.password_file: {name} is not a regular file")
        if mode & 0o077:
            raise ConfigError(f"{where}.password_file: {name} can be read by others (mode {stat.S_IMODE(mode):o}); "
                              f"make it private: chmod 600 {name}")
        data = file.read(MAX_PASSWORD_BYTES + 1)
    if len(data) > MAX_PASSWORD_BYTES:
        raise ConfigError(f"{where}.password_file: {name} is longer than a password ({MAX_PASSWORD_BYTES} bytes)")
    try:
        value = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}.password_file: {name} is not UTF-8 text") from None
    if not value:
        raise ConfigError(f"{where}.password_file: {name} is empty")
    return value
