"""Who a reply may go to, and when one may leave without a person approving it.

A reply goes to one address, taken from the original's headers, never from its text: the sender (From), or
its Reply-To when that is one address in the sender's own domain or in `policy.reply_to_domains` (a
Reply-To elsewhere is how a forged or injected message asks for replies to go to a third party). Nothing an
email says can add a recipient: there is no code path from the text to a header.

Auto-send needs every one of: `policy.mode == "auto"`, a sender on the allowlist (address, or exact domain:
"example.com" does not admit "evil-example.com" or "x.example.com"), triage's label in `auto_intents` with
a confidence of at least `min_confidence`, and a draft grounded in the knowledge base (a "we don't know"
draft waits for a person).

Does not: authenticate the sender. A forged From passes the allowlist; triage skips mail whose
Authentication-Results fail (apps.email_bot.triage), so keep `auto_senders` to domains that sign their mail.
"""

from __future__ import annotations

import re
from email.utils import getaddresses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apps.email_bot.config import Account, Policy
    from apps.email_bot.drafting import Draft
    from apps.email_bot.parse import Email
    from apps.email_bot.triage import Triage

# A bare address as a reply may be sent to: no display name, no comment, no list, no route, no blanks.
ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?")


class NoRecipient(ValueError):
    """The original has no address a reply may go to (none, several, malformed, or one of ours)."""


def domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def single_address(header: str | None) -> str | None:
    """The one bare address `header` holds ("Name <a@b.c>" -> "a@b.c", lowercased), or None: empty, several
    addresses, or not an address `ADDRESS` admits."""
    if not header or not isinstance(header, str) or len(header) > 1000:
        return None
    found = [address for _, address in getaddresses([header]) if address]
    if len(found) != 1 or not ADDRESS.fullmatch(found[0]):
        return None
    return found[0].lower()


def our_addresses(account: Account) -> set[str]:
    return {a.lower() for a in [account.address, *account.aliases]}


def reply_recipient(email: Email, account: Account, policy: Policy) -> str:
    """The one address the reply to `email` goes to: the sender, or its Reply-To as the module doc says.

    Raises NoRecipient when the sender's address is missing, malformed or ours (a loop)."""
    sender = single_address(email.sender)
    if sender is None:
        raise NoRecipient(f"the sender {str(email.sender)[:100]!r} is not one address a reply can go to")
    ours = our_addresses(account)
    if sender in ours:
        raise NoRecipient(f"the sender {sender} is one of our own addresses")
    reply_to = single_address(email.reply_to)
    allowed = {domain(sender), *(d.lower() for d in policy.reply_to_domains)}
    if reply_to and reply_to not in ours and domain(reply_to) in allowed:
        return reply_to
    return sender


def may_auto_send(email: Email, triage: Triage, policy: Policy, draft: Draft | None = None) -> bool:
    """Whether the reply may be sent without a person approving it (the module doc's conditions). `draft`:
    when given, it must hold a body grounded in the knowledge base."""
    if policy.mode != "auto" or triage.action != "draft":
        return False
    sender = single_address(email.sender)
    if sender is None:
        return False
    allowed = (sender in {s.lower() for s in policy.auto_senders}
               or domain(sender) in {d.lower() for d in policy.auto_domains})
    confident = triage.confidence is not None and triage.confidence >= policy.min_confidence
    grounded = draft is None or (draft.body is not None and draft.found)
    return allowed and triage.label in policy.auto_intents and confident and grounded
