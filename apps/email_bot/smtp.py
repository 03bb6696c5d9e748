"""SMTP for the email bot (smtplib): send one reply to exactly one recipient and say what the server's answer means
for the ledger: "sent", "retry" (4xx, refused or dropped connection: try again later) or "failed" (5xx: the server
will not take it, so it is not retried).

The envelope recipient is the one address the caller passes (the original sender, chosen by the drafting policy):
nothing in the message, its headers included, can add a recipient.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass


@dataclass
class Outcome:
    status: str  # "sent" | "retry" | "failed"
    code: int | None
    detail: str


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def classify(code: int | None, detail: str) -> Outcome:
    """4xx (and no answer at all) -> retry, 5xx -> failed."""
    if code is not None and 500 <= code < 600:
        return Outcome("failed", code, detail)
    return Outcome("retry", code, detail)


def send(host: str, port: int, security: str, user: str | None, password: str | None, sender: str, recipient: str,
         raw: bytes, timeout: float = 30.0) -> Outcome:
    """One SMTP transaction: MAIL FROM `sender`, RCPT TO `recipient`, DATA `raw`. Logs in when a password is given
    and the server offers AUTH. Never raises for the server's answers or a lost connection."""
    if security not in ("ssl", "starttls", "plain"):
        raise ValueError(f"smtp security must be ssl, starttls or plain, not {security!r}")
    context = ssl.create_default_context()
    client = None
    try:
        if security == "ssl":
            client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        if security == "starttls":
            client.starttls(context=context)
        client.ehlo_or_helo_if_needed()
        if password and client.has_extn("auth"):
            client.login(user or sender, password)
        client.sendmail(sender, [recipient], raw)  # one recipient: refused means an exception, not a return value
    except smtplib.SMTPRecipientsRefused as error:
        code, detail = error.recipients.get(recipient, (None, b"recipient refused"))
        return classify(code, f"recipient refused: {_text(detail)}")
    except smtplib.SMTPAuthenticationError as error:  # our credentials, not the message: keep it for later
        return Outcome("retry", error.smtp_code, f"authentication failed: {_text(error.smtp_error)}")
    except smtplib.SMTPResponseException as error:  # sender refused, data refused, 421 ...
        return classify(error.smtp_code, _text(error.smtp_error))
    except (smtplib.SMTPException, OSError, ssl.SSLError) as error:
        return Outcome("retry", None, f"{type(error).__name__}: {error}")
    finally:
        if client is not None:
            _quit(client)
    return Outcome("sent", 250, "accepted")  # after DATA was accepted, nothing (not even QUIT failing) undoes it


def _quit(client) -> None:
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()
