"""The "metric moved from X to Y" rule: a change's direction times whether more of that metric is good.

Models trained on finance tweets read "operating profit rose to EUR 13.1 mn from EUR 8.7 mn" as neutral (the
tweet annotators often did) and cannot know that a loss narrowing is good news. The rule finds a known metric
and the direction it moved (a verb such as "rose", "narrowed", "down from", or two figures "from X to Y"),
and says what that means for shareholders, with the words it matched as the reason. Mixed changes (profit up,
costs up) cancel; a negated move ("failed to rise") is left to the classifier.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Metrics where more is better for shareholders, and where more is worse. Longest names first when matched.
GOOD_WHEN_UP = (
    "revenue", "revenues", "sales", "net sales", "turnover", "profit", "profits", "operating profit", "net profit",
    "pretax profit", "pre-tax profit", "gross profit", "earnings", "eps", "earnings per share", "net income",
    "operating income", "ebit", "ebitda", "adjusted ebitda", "margin", "margins", "operating margin",
    "gross margin", "orders", "order intake", "order book", "order backlog", "backlog", "bookings", "cash flow",
    "free cash flow", "operating cash flow", "dividend", "market share", "deliveries", "shipments", "subscribers",
    "same-store sales", "comparable sales", "like-for-like sales", "occupancy", "load factor", "guidance",
    "forecast", "outlook", "price target", "target price", "production", "output", "volumes", "sales volumes",
    "assets under management", "aum", "deposits", "net interest income", "net interest margin", "premiums",
    "gross written premiums", "capital ratio", "cet1 ratio", "credit rating", "profit forecast",
    "revenue forecast", "sales forecast", "earnings forecast", "full-year forecast", "recurring revenue",
    "annual recurring revenue", "arr", "net revenue", "operating result", "result", "gross merchandise volume",
    "passengers", "passenger numbers", "traffic", "utilisation", "utilization", "shares", "share price", "stock",
    "stock price",
)
BAD_WHEN_UP = (
    "loss", "losses", "net loss", "operating loss", "pretax loss", "pre-tax loss", "cost", "costs",
    "expenses", "operating expenses", "opex", "debt", "net debt", "leverage", "provisions", "loan-loss provisions",
    "loan loss provisions", "impairment", "impairments", "impairment charges", "write-down", "write-downs",
    "writedowns", "charges", "restructuring charges", "churn", "churn rate", "defaults", "default rate",
    "delinquencies", "delinquency rate", "claims", "combined ratio", "cost-to-income ratio", "cost income ratio",
    "non-performing loans", "npl ratio", "bad loans", "arrears", "vacancy", "vacancy rate", "short interest",
    "cash burn", "inventories", "inventory", "warranty costs", "input costs", "fuel costs", "labour costs",
    "labor costs", "funding costs", "borrowing costs", "interest expense", "net outflows", "outflows",
    "recall costs",
)
UP_WORDS = (
    "rose", "rise", "rises", "risen", "rising", "increased", "increase", "increases", "increasing", "grew", "grow",
    "grows", "growing", "climbed", "climb", "climbs", "jumped", "jump", "jumps", "surged", "surge", "surges",
    "soared", "soars", "gained", "gains", "improved", "improve", "improves", "higher", "widened", "widen",
    "widens", "expanded", "expand", "expands", "doubled", "tripled", "raised", "raises", "raise", "lifted",
    "lifts", "boosted", "boosts", "up", "advanced", "advances", "rebounded", "rebounds", "strengthened",
    "accelerated", "upgraded", "swelled", "ballooned", "topped", "exceeded",
)
DOWN_WORDS = (
    "fell", "fall", "falls", "fallen", "falling", "decreased", "decrease", "decreases", "declined", "decline",
    "declines", "declining", "dropped", "drop", "drops", "slid", "slides", "slipped", "slips", "sank", "sinks",
    "plunged", "plunges", "tumbled", "tumbles", "shrank", "shrinks", "shrunk", "narrowed", "narrow", "narrows",
    "lower", "cut", "cuts", "reduced", "reduces", "lowered", "lowers", "halved", "contracted", "contracts",
    "eased", "eases", "down", "weakened", "weakens", "slowed", "slows", "deteriorated", "worsened", "trimmed",
    "trims", "downgraded", "slumped", "slumps", "retreated", "missed", "lost",
)
# Words that make the change not happen or not be the company's ("failed to rise", "no increase").
NEGATIONS = ("not", "no", "never", "failed", "fail", "without", "didn't", "did not", "unable", "neither", "nor")
# "worse"/"better" read as the metric's own value: a higher cost is worse, so they are not directions.
WINDOW = 8  # words between a metric and its direction word
# "but", "despite", "although": the sentence weighs the change against something else; the rule explains but
# does not decide (the classifier reads the whole sentence).
CONTRAST = re.compile(r"\b(but|however|although|though|despite|yet|whereas|while|even as)\b", re.IGNORECASE)

_NUMBER = r"(?:[$€£]\s?)?(?:[A-Z]{3}\s)?(\d+(?:[.,]\d+)?)\s?(%|percent|pct|bn|billion|mn|million|m|k|thousand)?"
FROM_TO = re.compile(rf"\bfrom\s+{_NUMBER}\s+to\s+{_NUMBER}", re.IGNORECASE)
TO_FROM = re.compile(rf"\bto\s+{_NUMBER}.{{0,60}}?\bfrom\s+{_NUMBER}", re.IGNORECASE)
SCALE = {"bn": 1e9, "billion": 1e9, "mn": 1e6, "million": 1e6, "m": 1e6, "k": 1e3, "thousand": 1e3}


def _alternation(words: tuple[str, ...]) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


METRIC = re.compile(rf"\b({_alternation(GOOD_WHEN_UP + BAD_WHEN_UP)})\b", re.IGNORECASE)
# A change named before its metric: "a 40% drop in operating profit", "higher costs", "raised its guidance".
NOUN_BEFORE = re.compile(r"\b(drop|fall|decline|slump|plunge|decrease|cut|reduction|rise|increase|jump|surge|gain|"
                         r"growth|improvement|rebound)\s+in\s+(?:the\s+|its\s+|their\s+)?$", re.IGNORECASE)
ADJECTIVE_BEFORE = re.compile(r"\b(higher|lower|rising|falling|increased|reduced|declining|growing|raised|cut|"
                              r"lowered|trimmed|boosted|lifted)\s+(?:(?:its|the|their|full-year|annual|"
                              r"quarterly|\d{4})\s+){0,3}$", re.IGNORECASE)
NOUN_UP = ("rise", "increase", "jump", "surge", "gain", "growth", "improvement", "rebound")
DIRECTION = re.compile(rf"\b({_alternation(UP_WORDS)}|{_alternation(DOWN_WORDS)})\b", re.IGNORECASE)
TOKEN = re.compile(r"[\w'%.-]+")


@dataclass(frozen=True)
class MetricChange:
    metric: str  # as written
    direction: int  # +1 up, −1 down
    effect: int  # +1 good for shareholders, −1 bad
    evidence: str  # the words matched, e.g. "operating profit … rose", or "from 8.7 mn to 13.1 mn"
    start: int  # character span of the evidence in the sentence
    end: int

    @property
    def reason(self) -> str:
        word = "up" if self.direction > 0 else "down"
        return f"{self.metric} {word} ({'good' if self.effect > 0 else 'bad'} for shareholders): “{self.evidence}”"


def _value(number: str, unit: str | None) -> float:
    return float(number.replace(",", ".")) * SCALE.get((unit or "").lower(), 1.0)


def _figures_direction(text: str) -> tuple[int, re.Match] | None:
    """+1/−1 from "from X to Y" or "to Y … from X" figures (same unit), else None."""
    for pattern, reverse in ((FROM_TO, False), (TO_FROM, True)):
        match = pattern.search(text)
        if match is None:
            continue
        first, second = _value(match.group(1), match.group(2)), _value(match.group(3), match.group(4))
        old, new = (second, first) if reverse else (first, second)
        if old != new:
            return (1 if new > old else -1), match
    return None


def _negated(text: str) -> bool:
    words = re.findall(r"[a-z']+", text.lower())
    return any(w in NEGATIONS for w in words) or "did not" in text.lower()


def metric_changes(sentence: str) -> list[MetricChange]:
    """Each known metric with a direction: named just before it ("a drop in profit", "higher costs"), or a
    direction word within WINDOW words after it ("profit rose"), or figures after it ("from 8.7 mn to 13.1 mn")."""
    changes = []
    good = {w.lower() for w in GOOD_WHEN_UP}
    for metric in METRIC.finditer(sentence):
        polarity = 1 if metric.group(1).lower() in good else -1
        before = sentence[max(0, metric.start() - 40): metric.start()]
        prefix = NOUN_BEFORE.search(before) or ADJECTIVE_BEFORE.search(before)
        if prefix is not None:
            word = prefix.group(1).lower()
            direction = 1 if word in UP_WORDS or word in NOUN_UP else -1
            start = metric.start() - (len(before) - prefix.start())
            changes.append(MetricChange(metric.group(1), direction, direction * polarity,
                                        sentence[start: metric.end()], start, metric.end()))
            continue
        after = sentence[metric.end():]
        words_after = list(TOKEN.finditer(after))[:WINDOW]
        window = after[: words_after[-1].end() if words_after else 0]
        next_metric = METRIC.search(window)  # its direction word is its own
        if next_metric is not None:
            window = window[: next_metric.start()]
        figures = _figures_direction(after[:200] if next_metric is None else window)
        verb = DIRECTION.search(window)
        if verb is not None and not _negated(window[: verb.start()]):
            direction, evidence_end = (1 if verb.group(1).lower() in UP_WORDS else -1), metric.end() + verb.end()
            if figures is not None and figures[0] != direction:
                continue  # the words and the figures disagree: leave it to the classifier
        elif figures is not None:
            direction, evidence_end = figures[0], metric.end() + figures[1].end()
        else:
            continue
        changes.append(MetricChange(metric.group(1), direction, direction * polarity,
                                    sentence[metric.start(): evidence_end], metric.start(), evidence_end))
    return changes


# Results against what was expected: a beat is good news and a miss bad (for a cost or a loss, the reverse); a
# result in line with expectations, or a metric held unchanged, is no news.
_EXPECTED = r"(?:expect\w*|forecasts?|forecast by|consensus|estimates?|guidance|outlook|poll|plan|budget)"
EXPECTATION = {
    1: re.compile(rf"\b(beat|beats|topped|exceeded|surpassed|above|ahead of|better than)\b[^.;]{{0,60}}?"
                  rf"\b{_EXPECTED}", re.IGNORECASE),
    -1: re.compile(rf"\b(missed|misses|below|short of|worse than|lower than)\b[^.;]{{0,60}}?\b{_EXPECTED}",
                   re.IGNORECASE),
    0: re.compile(rf"\b(?:(?:in line with|matched|matching|met|bracketing)\b[^.;]{{0,60}}?\b{_EXPECTED}|"
                  rf"as expected|held no surprises)", re.IGNORECASE),
}
STEADY = re.compile(r"(?<!from )(?<!to )\b(unchanged|flat|steady|stable|broadly at|at last year's level|held at|"
                    r"remained at)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Signal:
    """A convention the sentence matched: the class it points to (−1 negative, 0 neutral, +1 positive)."""
    direction: int
    reason: str


def signals(sentence: str) -> list[Signal]:
    """The metric rule's decision, results against expectations, and steady metrics, each as a Signal."""
    effect, changes = rule_effect(sentence)
    found = [Signal(effect, "; ".join(c.reason for c in changes))] if effect else []
    for direction, pattern in EXPECTATION.items():
        match = pattern.search(sentence)
        if match is None:
            continue
        metric = None
        for candidate in METRIC.finditer(sentence[: match.start()]):
            metric = candidate  # the metric named last before the comparison
        bad = metric is not None and metric.group(1).lower() not in {w.lower() for w in GOOD_WHEN_UP}
        pointed = -direction if bad and direction else direction
        what = {1: "better than expected", -1: "worse than expected", 0: "as expected (no news)"}[pointed]
        found.append(Signal(pointed, f"{what}: “{match.group()}”"))
        break
    for steady in STEADY.finditer(sentence):  # a metric just before: "net sales were essentially unchanged"
        if not changes and METRIC.search(sentence[max(0, steady.start() - 60): steady.start()]):
            found.append(Signal(0, f"a metric held steady (no news): “{steady.group()}”"))
            break
    return found


def rule_effect(sentence: str) -> tuple[int, list[MetricChange]]:
    """(+1 / −1 / 0, the changes): the sign of the summed effects; 0 when none, when they cancel, or when the
    sentence sets them against something else (CONTRAST)."""
    changes = metric_changes(sentence)
    if CONTRAST.search(sentence):
        return 0, changes
    total = sum(c.effect for c in changes)
    return (1 if total > 0 else -1 if total < 0 else 0), changes
