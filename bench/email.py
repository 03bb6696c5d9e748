"""Email responder: messages per minute through parse + triage and through triage + draft, delivery-to-draft latency
with the service running against loopback servers, and the service's memory.

1. parse + triage (rules only, no model): every message of tests/data/emails (real-world and torture-test mail),
   passes over the set until `--seconds` have gone by.
2. triage + draft on the embedded model (SmolLM2-135M-Instruct classifying under constrained choices, MiniLM
   embedding a small knowledge base, the model choosing the passage): `--questions` customer questions, after
   one untimed (loading the embedder, warming the model).
3. The service (apps.email_bot.service, in this process) watching a Dovecot mailbox on loopback (IDLE) with an
   aiosmtpd sink: each question is delivered by IMAP APPEND once the previous one is drafted; the time from
   APPEND's answer to the ledger's "drafted" row, p50 / p95. Needs /usr/sbin/dovecot (Debian's dovecot-imapd).
4. RSS of this process (the service, its model and embedder loaded) idle for 2 s, and the most it reached while
   drafting in 3 (sampled every 20 ms).

Run: .venv/bin/python -m bench.email
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import results

CORPUS = results.ROOT / "tests" / "data" / "emails"
KB = {
    "refunds.md": "Refunds\nYou can ask for a refund within 30 days of delivery. Refunds are paid back to the card "
                  "you paid with within 5 business days. Gift cards cannot be refunded.",
    "shipping.md": "Shipping\nWe ship to Germany, France, Spain and Italy. Standard delivery takes 3 to 5 business "
                   "days. Express delivery arrives the next business day and costs 9 euros.",
    "accounts.md": "Accounts\nTo reset your password, open the login page and click Forgot password. The reset link "
                   "in the email stays valid for 24 hours. Two-factor codes are sent by text message.",
    "orders.md": "Orders\nYou can change or cancel an order until it ships; after that, return it for a refund. "
                 "Order confirmations arrive by email within ten minutes.",
}
QUESTIONS = [
    ("Refund", "Hi, how many days after delivery can I still ask for a refund?"),
    ("Delivery to Spain", "How long does standard delivery to Spain take?"),
    ("Password", "I forgot my password. How do I reset it?"),
    ("Cancel order", "Can I still cancel my order? It has not shipped yet."),
    ("Express", "How much does express delivery cost and when does it arrive?"),
    ("Gift card", "Can I get my money back for a gift card?"),
    ("Confirmation", "I did not get an order confirmation. When should it arrive?"),
    ("Countries", "Do you ship to Italy?"),
]


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def corpus() -> list[bytes]:
    return [path.read_bytes() for path in sorted(CORPUS.rglob("*"))
            if path.is_file() and path.suffix.lower() in (".eml", ".msg", ".txt", "") and path.name != "LICENSE"]


def parse_and_triage(messages: list[bytes], config, seconds: float) -> dict:
    from apps.email_bot.parse import Unparseable, parse_email
    from apps.email_bot.triage import triage

    done, actions, started = 0, {}, time.perf_counter()
    while time.perf_counter() - started < seconds or done < len(messages):
        raw = messages[done % len(messages)]
        try:
            action = triage(parse_email(raw), config).action
        except Unparseable:
            action = "quarantine"
        if done < len(messages):
            actions[action] = actions.get(action, 0) + 1
        done += 1
    elapsed = time.perf_counter() - started
    return {"messages": done, "distinct": len(messages), "seconds": round(elapsed, 2),
            "per_minute": round(done / elapsed * 60), "actions": actions}


def email_bytes(subject: str, text: str, n: int) -> bytes:
    from email.message import EmailMessage
    from email.policy import SMTP

    message = EmailMessage(policy=SMTP)
    message["From"] = f"Customer {n} <customer{n}@customer.test>"
    message["To"] = "support@example.test"
    message["Subject"] = subject
    message["Message-ID"] = f"<bench-{n}-{time.time_ns()}@customer.test>"
    message["Date"] = "Mon, 02 Mar 2026 10:00:00 +0000"
    message.set_content(text + "\n\nThanks,\nCustomer")
    return message.as_bytes()


def triage_and_draft(llm, kb, config, count: int) -> dict:
    from apps.email_bot.drafting import draft_reply
    from apps.email_bot.parse import parse_email
    from apps.email_bot.triage import triage

    warm = parse_email(email_bytes(*QUESTIONS[0], -1))  # the first call loads the embedder and warms the model
    triage(warm, config, llm)
    draft_reply(warm, [], config, llm, kb)
    times, found = [], 0
    for n in range(count):
        subject, text = QUESTIONS[n % len(QUESTIONS)]
        email = parse_email(email_bytes(subject, text, n))
        started = time.perf_counter()
        triage(email, config, llm)
        draft = draft_reply(email, [], config, llm, kb)
        times.append(time.perf_counter() - started)
        found += draft.found
    return {"messages": count, "seconds": round(sum(times), 2), "per_minute": round(count / sum(times) * 60, 1),
            "grounded": found}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def service_latency(llm, kb, count: int) -> dict:
    sys.path.insert(0, str(results.ROOT / "tests"))
    from email_servers import DOVECOT, PASSWORD, PASSWORD_ENV, Dovecot, SmtpSink, bot_config, free_port

    from apps.email_bot.service import JsonLog, Service

    if not DOVECOT.exists():
        return {"skipped": f"{DOVECOT} is missing"}
    root = Path(tempfile.mkdtemp(prefix="llmkit-bench-dovecot-"))
    root.chmod(0o755)
    server, sink = Dovecot(root, free_port()), SmtpSink()
    server.write_config()
    server.start()
    sink.start()
    os.environ[PASSWORD_ENV] = PASSWORD
    user = server.add_user()
    service = Service(bot_config(user, sink, root / "state", limits={"idle_seconds": 300.0}), llm, kb,
                      log=JsonLog(io.StringIO()))
    peak, sampling = [0.0], threading.Event()

    def sample():
        while not sampling.wait(0.02):
            peak[0] = max(peak[0], rss_mib())

    try:
        service.start()
        time.sleep(2.0)
        idle = rss_mib()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        latencies = []
        for n in range(count):
            subject, text = QUESTIONS[n % len(QUESTIONS)]
            server.deliver(user, email_bytes(subject, text, n))
            delivered = time.time()
            deadline = time.monotonic() + 120
            while len(drafted := service.ledger.items("drafted")) <= n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"message {n} was not drafted in 120 s: {service.ledger.counts()}")
                time.sleep(0.005)
            latencies.append(max(item.updated_at for item in drafted) - delivered)
        sampling.set()
        sampler.join()
    finally:
        service.shutdown()
        sink.stop()
        server.stop()
    return {"messages": count, "p50_s": round(statistics.median(latencies), 3),
            "p95_s": round(percentile(latencies, 0.95), 3), "max_s": round(max(latencies), 3),
            "rss_idle_mib": round(idle), "rss_drafting_peak_mib": round(peak[0])}


def table(figures: dict) -> str:
    parse, draft, live = figures["parse_triage"], figures["triage_draft"], figures["service"]
    actions = ", ".join(f"{action} {count}" for action, count in sorted(parse["actions"].items()))
    rows = ["| what | messages | messages/min | notes |", "|---|---|---|---|",
            f"| parse + triage (rules, no model) | {parse['messages']} | {parse['per_minute']:,} | "
            f"{parse['distinct']} corpus messages: {actions} |",
            f"| triage + draft (SmolLM2-135M + MiniLM) | {draft['messages']} | {draft['per_minute']} | "
            f"{draft['grounded']} drafts grounded in the knowledge base |"]
    text = "\n".join(rows)
    if "skipped" in live:
        return text + f"\n\nService latency: skipped ({live['skipped']})."
    return text + "\n\n" + "\n".join([
        "| service on loopback Dovecot (IDLE) + SMTP sink | value |", "|---|---|",
        f"| delivery -> draft p50 | {live['p50_s']:.2f} s |",
        f"| delivery -> draft p95 | {live['p95_s']:.2f} s |",
        f"| delivery -> draft max | {live['max_s']:.2f} s ({live['messages']} messages, one at a time) |",
        f"| RSS idle (model and embedder loaded) | {live['rss_idle_mib']} MiB |",
        f"| RSS while drafting (peak) | {live['rss_drafting_peak_mib']} MiB |"])


def main() -> None:
    parser = results.parser("email", __doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="parse + triage: time to keep passing the set")
    parser.add_argument("--questions", type=int, default=16, help="triage + draft, and the service: questions")
    parser.add_argument("--model", default=None, help="model spec (default: the embedded SmolLM2-135M-Instruct)")
    args = parser.parse_args()

    import core
    from apps.email_bot.config import parse_config
    from rag import Collection, TextItem

    config = parse_config({"accounts": [{"address": "support@example.test", "imap_host": "127.0.0.1",
                                         "smtp_host": "127.0.0.1", "password_env": "UNUSED"}]})
    figures = {"parse_triage": parse_and_triage(corpus(), config, args.seconds)}
    llm = core.load(args.model)
    with tempfile.TemporaryDirectory() as home:
        kb = Collection.open("kb", data_dir=home)  # the embedded MiniLM
        kb.add_texts([TextItem(name, text) for name, text in KB.items()])
        figures["triage_draft"] = triage_and_draft(llm, kb, config, args.questions)
        figures["service"] = service_latency(llm, kb, args.questions)
        kb.close()
    results.write("email", f"Email responder on {args.model or 'the embedded SmolLM2-135M-Instruct'}",
                  table(figures), {"figures": figures}, args.results)


if __name__ == "__main__":
    main()
