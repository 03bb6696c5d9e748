"""News-register training sentences from templates: the conventions the tweet set lacks.

The tweet annotators often marked factual good news ("operating profit rose to EUR 13.1 mn from EUR 8.7 mn")
neutral, and tweets rarely say what formal news says: a loss that narrowed, guidance reaffirmed, a target
bought at a premium, a dividend held. These templates state such conventions once each, with invented
companies, figures and periods, and the label a shareholder would give. They are training data only: the
development set (data/finance-news-dev) was written separately, by hand, and is never read here.
"""

from __future__ import annotations

import random

from apps.finance_sentiment.rules import BAD_WHEN_UP, GOOD_WHEN_UP

PREFIXES = ("Acorn", "Birchfield", "Calder", "Dunmore", "Elswick", "Farrow", "Glenbrook", "Hartwell", "Ivory",
            "Juniper", "Kingsmere", "Lowther", "Marrick", "Nethercott", "Oakhurst", "Penrose", "Quarry",
            "Redfern", "Stanway", "Tolworth", "Upland", "Vantor", "Whitcombe", "Yardley", "Zephyr", "Ashgrove",
            "Brightwater", "Coldharbour", "Deepdale", "Eastwick")
SECTORS = ("Foods", "Telecom", "Mining", "Pharma", "Motors", "Bank", "Insurance", "Software", "Energy", "Airways",
           "Retail", "Steel", "Chemicals", "Logistics", "Homes", "Semiconductors", "Media", "Utilities", "Brewing",
           "Shipping", "Holdings", "Group", "Industries", "Capital", "Systems")
BROKERS = ("Ellery Partners", "Marchetti Securities", "Holt & Vane", "Sutter Capital Markets", "Rowan Research")
PERIODS = ("in the first quarter", "in the second quarter", "in the third quarter", "in the fourth quarter",
           "in the first half", "for the full year", "in the three months to June", "in fiscal 2025",
           "in the nine months to September")
CURRENCIES = ("EUR", "USD", "GBP", "SEK", "CHF", "AUD")
UP_VERBS = ("rose", "increased", "grew", "climbed", "jumped", "improved", "was up")
DOWN_VERBS = ("fell", "decreased", "declined", "dropped", "slipped", "was down")
LOSS_UP = ("widened", "increased", "grew", "deepened")
LOSS_DOWN = ("narrowed", "decreased", "shrank", "fell")


def _company(rng: random.Random) -> str:
    return f"{rng.choice(PREFIXES)} {rng.choice(SECTORS)}"


def _amounts(rng: random.Random, up: bool) -> tuple[str, str]:
    """(old, new) as written, e.g. ("EUR 8.7 mn", "EUR 13.1 mn"), new above old when `up`."""
    currency, unit = rng.choice(CURRENCIES), rng.choice(("mn", "bn", "million", "billion"))
    old = round(rng.uniform(1, 900), 1)
    new = round(old * rng.uniform(1.05, 1.9), 1) if up else round(old * rng.uniform(0.4, 0.95), 1)
    return f"{currency} {old} {unit}", f"{currency} {new} {unit}"


def _metric_change(rng: random.Random) -> tuple[str, str]:
    good = rng.random() < 0.6
    metric = rng.choice([m for m in (GOOD_WHEN_UP if good else BAD_WHEN_UP) if len(m) > 3])
    up = rng.random() < 0.5
    company, period = _company(rng), rng.choice(PERIODS)
    old, new = _amounts(rng, up)
    if metric.endswith("loss") or metric.endswith("losses"):
        verb = rng.choice(LOSS_UP if up else LOSS_DOWN)
    else:
        verb = rng.choice(UP_VERBS if up else DOWN_VERBS)
    label = "positive" if up == good else "negative"
    pct = rng.randint(2, 60)
    template = rng.choice((
        f"{company} said its {metric} {verb} to {new} {period} from {old} a year earlier.",
        f"{company}'s {metric} {verb} {pct}% {period}, the company said on Tuesday.",
        f"{metric.capitalize()} at {company} {verb} to {new} from {old} {period}.",
        f"{company} reported {metric} of {new} {period}, {'up' if up else 'down'} from {old} a year ago.",
        f"{company} posted a {pct}% {'rise' if up else 'fall'} in {metric} {period}.",
        f"{period.capitalize()}, {company}'s {metric} {verb} to {new}, compared with {old} in the same period "
        f"last year.",
    ))
    return template, label


def _event(rng: random.Random) -> tuple[str, str]:
    company, broker, pct = _company(rng), rng.choice(BROKERS), rng.randint(5, 45)
    other = _company(rng)
    currency = rng.choice(CURRENCIES)
    events = (
        (f"{company} raised its full-year outlook after strong demand in its core markets.", "positive"),
        (f"{company} cut its annual profit forecast, citing weaker orders.", "negative"),
        (f"{company} reaffirmed its guidance for the year.", "neutral"),
        (f"{company} said it expects results in line with its previous outlook.", "neutral"),
        (f"{company} warned that full-year earnings would fall short of its earlier target.", "negative"),
        (f"{broker} upgraded {company} to buy from hold.", "positive"),
        (f"{broker} downgraded {company} to sell, citing slowing growth.", "negative"),
        (f"{broker} reiterated its hold rating on {company}.", "neutral"),
        (f"{broker} raised its price target on {company} to {currency} {pct}.", "positive"),
        (f"{broker} lowered its price target on {company} and kept a neutral rating.", "negative"),
        (f"{company} agreed to be acquired by {other} for {currency} {pct} per share, a {pct}% premium.",
         "positive"),
        (f"{company} completed the previously announced acquisition of a small distributor.", "neutral"),
        (f"Talks on {other}'s takeover of {company} collapsed, sending its shares down {pct}%.", "negative"),
        (f"{company} was sued by investors who allege it misled them about product safety.", "negative"),
        (f"Regulators fined {company} {currency} {pct} mn over reporting failures.", "negative"),
        (f"A court dismissed the patent lawsuit against {company}.", "positive"),
        (f"{company} said a hearing in the contract dispute is scheduled for next month.", "neutral"),
        (f"{company} raised its quarterly dividend by {pct}%.", "positive"),
        (f"{company} suspended its dividend to preserve cash.", "negative"),
        (f"{company} kept its dividend unchanged at {currency} 0.{pct} per share.", "neutral"),
        (f"{company} announced a {currency} {pct} mn share buyback.", "positive"),
        (f"{company} will report its results on Thursday before the market opens.", "neutral"),
        (f"{company} will hold its annual general meeting in Zurich on May 12.", "neutral"),
        (f"{company} appointed a new head of investor relations.", "neutral"),
        (f"{company}'s chief executive resigned unexpectedly amid an accounting review.", "negative"),
        (f"{company} won a {currency} {pct} mn contract to supply the national rail operator.", "positive"),
        (f"{company} halted production at its main plant after a fire.", "negative"),
        (f"{company} recalled thousands of vehicles over a braking fault.", "negative"),
        (f"{company} shares rose {pct}% after the results beat analysts' expectations.", "positive"),
        (f"{company} shares fell {pct}% after it missed analysts' estimates.", "negative"),
        (f"{company} received regulatory approval for its new treatment.", "positive"),
        (f"{company} said the regulator rejected its application for the drug.", "negative"),
        (f"{company} plans to cut {pct}00 jobs as demand slows.", "negative"),
        (f"{company} opened a new office in Lisbon.", "neutral"),
        (f"{company} issued {currency} {pct}0 mn of bonds due 2031.", "neutral"),
        (f"Rating agency Corvex affirmed {company}'s credit rating with a stable outlook.", "neutral"),
        (f"Rating agency Corvex cut {company}'s credit rating to junk.", "negative"),
        (f"{company} posted record quarterly sales.", "positive"),
        (f"{company} swung to a net loss as demand collapsed.", "negative"),
        (f"{company} returned to profit after two years of losses.", "positive"),
        # results against expectations: the surprise is the news
        (f"{company}'s quarterly {_metric(rng, True)} of {currency} {pct}0 mn was in line with the analysts' "
         f"consensus.", "neutral"),
        (f"{company}'s {_metric(rng, True)} matched the company's own guidance.", "neutral"),
        (f"{company}'s {_metric(rng, True)} came in above the average analyst estimate.", "positive"),
        (f"{company}'s {_metric(rng, True)} fell short of the forecasts in a poll of analysts.", "negative"),
        (f"{company} expects {_metric(rng, True)} below the consensus for next year.", "negative"),
        (f"{company}'s {_metric(rng, False)} were higher than analysts had expected.", "negative"),
        (f"{company} reported a smaller loss than analysts had forecast.", "positive"),
        # a metric held where it was
        (f"{company}'s {_metric(rng, rng.random() < 0.5)} was essentially unchanged from a year earlier.", "neutral"),
        (f"{company} said its {_metric(rng, rng.random() < 0.5)} would stay broadly flat next year.", "neutral"),
        # dates and procedure: no news
        (f"The tender offer for {company} shares runs until the end of the month.", "neutral"),
        (f"{company} will pay its dividend of {currency} 0.{pct} per share on May {pct % 28 + 1}.", "neutral"),
        (f"{company} said the ruling in its patent case is expected next year.", "neutral"),
        (f"{company} said it had filed its annual report on time.", "neutral"),
        (f"{company} is a defendant in several routine lawsuits, none of which it expects to be material.",
         "neutral"),
        (f"{broker} initiated coverage of {company} with a neutral rating.", "neutral"),
        # bad news that did not happen is good news
        (f"Regulators closed their investigation into {company} without taking any action.", "positive"),
        (f"{company} said none of its plants had been affected by the floods.", "positive"),
        (f"An inquiry found no evidence of wrongdoing by {company}'s management.", "positive"),
        (f"{company} settled the dispute for far less than the regulator had sought.", "positive"),
        # who pays and who gains
        (f"{company} plans to raise {currency} {pct}0 mn by selling new shares at a discount.", "negative"),
        (f"{company} will cut {pct}0 jobs in a restructuring expected to save {currency} {pct} mn a year.",
         "positive"),
        (f"A court ordered {company} to pay {currency} {pct} mn in damages to {other}.", "negative"),
        (f"{company} lost its largest customer, {other}, to a rival.", "negative"),
    )
    return rng.choice(events)


def _metric(rng: random.Random, good: bool) -> str:
    return rng.choice([m for m in (GOOD_WHEN_UP if good else BAD_WHEN_UP) if len(m) > 3])


def sentences(count: int = 2000, seed: int = 0) -> list[tuple[str, str]]:
    """`count` (sentence, label) pairs, half metric changes and half events, deterministic for a seed; unique."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < count:
        sentence, label = _metric_change(rng) if rng.random() < 0.5 else _event(rng)
        if sentence not in seen:
            seen.add(sentence)
            out.append((sentence, label))
    return out
