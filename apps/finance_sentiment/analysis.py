"""Sentences, companies and articles scored: the classifier, the metric rule and the lexicon, put together.

A sentence's probabilities are the calibrated classifier's, moved by the metric rule when it fires (its class's
logit raised by RULE_WEIGHT: evidence added, not a verdict imposed, so a confident classifier can still
disagree). Each sentence keeps its reasons: the rule's match and the Loughran–McDonald words.

A company's score comes from the sentences that name it. When a sentence names several companies, each is
scored on its own clauses ("upgraded Harbor Bancorp to buy | and downgraded Fallowmere Bank to sell"): a clause
without a name belongs to the company named last before it ("…Westmere Realty, | whose own stock fell 9%").

An article's score weighs each sentence by where it stands (the headline and lead say what the story is
about) and by its confidence, so a long tail of neutral boilerplate does not drown the news.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from apps.finance_sentiment import lexicons, rules
from apps.finance_sentiment.classifier import LABELS, MAX_TEXT_CHARS, SentenceClassifier, softmax
from apps.finance_sentiment.companies import Mention, find_companies

RULE_WEIGHT = 3.0  # logits added to the rule's class: e^3 ≈ 20 times the odds
HEADLINE_WEIGHT, LEAD_WEIGHT = 2.0, 1.5  # a sentence's weight in its article, beside 1 for the rest
LABEL_MARGIN = 0.15  # an article or company score beyond ±this is positive / negative, else neutral
MAX_SENTENCES = 400  # of one article: the rest is not scored (say so in the result)
MAX_ARTICLE_CHARS = 100_000  # of one article's text read at all (news.py cuts articles it reads to this too)
MAX_PARAGRAPH_CHARS = 5000  # pysbd's time grows faster than linearly with its input: longer paragraphs are cut
# Clause boundaries inside one sentence: punctuation, and conjunctions that join two pieces of news.
CLAUSE_BREAK = re.compile(r"[,;:]\s+|\s+(?=(?:but|while|whereas|and|although|as)\s)|\s+[-–—]\s+")


@dataclass
class ScoredText:
    """A sentence (or a company's clauses of one) with its outcome."""
    text: str
    label: str  # negative / neutral / positive, or "uncertain"
    probabilities: dict[str, float]
    score: float  # p(positive) − p(negative)
    confidence: float
    reasons: list[str] = field(default_factory=list)


@dataclass
class Sentence(ScoredText):
    start: int = 0  # offsets in the article text (the headline has its own: see Article.headline)
    end: int = 0
    weight: float = 1.0
    companies: list[str] = field(default_factory=list)


@dataclass
class CompanyScore:
    company: str
    ticker: str
    score: float  # weighted mean of its sentences' scores
    label: str
    confidence: float  # weighted mean confidence
    sentences: int
    reason: str  # the sentence (or clause) that weighed most, with its reasons


@dataclass
class Article:
    title: str
    text: str
    score: float
    label: str
    confidence: float
    probabilities: dict[str, float]  # the sentences' probabilities, weighted as the score is
    sentences: list[Sentence]  # the headline first (when there is one), then the body's
    companies: list[CompanyScore]
    notes: list[str] = field(default_factory=list)  # e.g. sentences left unscored


def split_sentences(text: str, limit: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of each sentence, trimmed; paragraph by paragraph (pysbd within each); stops after `limit`."""
    import pysbd

    segmenter = pysbd.Segmenter(language="en", clean=False, char_span=True)
    spans = []
    for paragraph in re.finditer(r"[^\n]+", text):
        for offset in range(paragraph.start(), paragraph.end(), MAX_PARAGRAPH_CHARS):
            piece = text[offset: min(paragraph.end(), offset + MAX_PARAGRAPH_CHARS)]
            for span in segmenter.segment(piece):
                sentence = span.sent.strip()
                if sentence:
                    start = offset + span.start + (len(span.sent) - len(span.sent.lstrip()))
                    spans.append((start, start + len(sentence)))
            if limit is not None and len(spans) >= limit:
                return spans[:limit]
    return spans


def target_clauses(sentence: str, mentions: list[Mention], company: str) -> str:
    """The parts of `sentence` about `company` when it names others too: its clauses, else the shared ones."""
    names = {m.company for m in mentions}
    if names <= {company}:
        return sentence
    bounds = [0] + [m.end() for m in CLAUSE_BREAK.finditer(sentence)] + [len(sentence)]
    owners, last = [], None
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        inside = [m.company for m in mentions if start <= m.start < end]
        last = inside[-1] if inside else last
        owners.append(set(inside) if inside else ({last} if last else set()))
    clauses = list(zip(bounds[:-1], bounds[1:], strict=True))
    own = [span for span, who in zip(clauses, owners, strict=True) if who == {company}]
    shared = [span for span, who in zip(clauses, owners, strict=True) if company in who]
    chosen = own or shared
    return " ".join(sentence[s:e].strip(" ,;:") for s, e in chosen) if chosen else sentence


class Analyzer:
    """Scores sentences, companies and articles. One per process: the classifier loads once."""

    def __init__(self, classifier: SentenceClassifier | None = None, rule_weight: float = RULE_WEIGHT,
                 use_rule: bool = True):
        self._classifier = classifier
        self.rule_weight = rule_weight
        self.use_rule = use_rule

    @cached_property
    def classifier(self) -> SentenceClassifier:
        return self._classifier or SentenceClassifier()

    def score(self, texts: list[str]) -> list[ScoredText]:
        """Each text scored as one sentence, in one batch."""
        if not texts:
            return []
        logits = self.classifier.logits(texts) / self.classifier.temperature
        out = []
        for text, row in zip(texts, logits, strict=True):
            read = text[:MAX_TEXT_CHARS]  # what the classifier reads: the rule and the lexicon read no more
            found = rules.signals(read) if self.use_rule else []
            if found:
                row = row.copy()
                for signal in found:
                    row[signal.direction + 1] += self.rule_weight  # LABELS: negative, neutral, positive
            prediction = self.classifier.prediction(softmax(row[None, :])[0])
            reasons = [signal.reason for signal in found]
            hits = lexicons.lm_hits(read)
            if hits.positive:
                reasons.append("positive words: " + ", ".join(hits.positive))
            if hits.negative:
                reasons.append("negative words: " + ", ".join(hits.negative))
            out.append(ScoredText(text, prediction.label, prediction.probabilities, prediction.score,
                                  prediction.confidence, reasons))
        return out

    def company_sentences(self, sentence: str, mentions: list[Mention]) -> dict[str, ScoredText]:
        """{company: its score in this sentence}, each company on its own clauses when several are named."""
        companies = list(dict.fromkeys(m.company for m in mentions))
        if len(companies) <= 1:
            return dict(zip(companies, self.score([sentence]), strict=True)) if companies else {}
        texts = [target_clauses(sentence, mentions, company) for company in companies]
        return dict(zip(companies, self.score(texts), strict=True))

    def article(self, text: str, title: str = "", watchlist=()) -> Article:
        """Score an article: its sentences, the companies it names, and the whole."""
        notes = []
        if len(text) > MAX_ARTICLE_CHARS:
            notes.append(f"only the first {MAX_ARTICLE_CHARS:,} of {len(text):,} characters were read")
            text = text[:MAX_ARTICLE_CHARS]
        spans = split_sentences(text, limit=MAX_SENTENCES + 1)
        if len(spans) > MAX_SENTENCES:
            notes.append(f"only the first {MAX_SENTENCES} sentences were scored")
            spans = spans[:MAX_SENTENCES]
        pieces = ([(title.strip(), 0, 0, HEADLINE_WEIGHT)] if title.strip() else []) + [
            (text[s:e], s, e, LEAD_WEIGHT if i == 0 else 1.0) for i, (s, e) in enumerate(spans)]
        if not pieces:
            raise ValueError("the article has no text to score")
        scored = self.score([p[0] for p in pieces])
        mentions_by_piece = _mentions_by_piece(title.strip(), text, pieces, watchlist)
        sentences = []
        per_company: dict[str, list[tuple[ScoredText, float]]] = {}
        tickers = {}
        for (piece, start, end, weight), result, mentions in zip(pieces, scored, mentions_by_piece, strict=True):
            names = list(dict.fromkeys(m.company for m in mentions))
            sentences.append(Sentence(**vars(result), start=start, end=end, weight=weight, companies=names))
            for m in mentions:
                tickers.setdefault(m.company, m.ticker)
            targeted = {names[0]: result} if len(names) == 1 else self.company_sentences(piece, mentions)
            for company, company_result in targeted.items():
                per_company.setdefault(company, []).append((company_result, weight))
        score, confidence = _weighted([(s, s.weight) for s in sentences])
        weights = np.array([s.weight * s.confidence for s in sentences])
        mean = np.array([[s.probabilities[n] for n in LABELS] for s in sentences]).T @ weights / max(weights.sum(),
                                                                                                   1e-12)
        probabilities = {name: round(float(p), 4) for name, p in zip(LABELS, mean, strict=True)}
        companies = [_company(name, tickers.get(name, ""), found) for name, found in per_company.items()]
        companies.sort(key=lambda c: -c.sentences)
        return Article(title.strip(), text, score, _label(score), confidence, probabilities, sentences, companies,
                       notes)


def _mentions_by_piece(title: str, text: str, pieces: list[tuple], watchlist) -> list[list[Mention]]:
    """Each piece's company mentions, offsets within the piece. Found in the whole article at once, so a short
    form ("Brackwater") in one sentence is known from the full name ("Brackwater Energy") in another."""
    prefix = f"{title}\n\n" if title else ""
    mentions = find_companies(prefix + text, watchlist=watchlist)
    out = []
    for index, (_text, start, end, _weight) in enumerate(pieces):
        if title and index == 0:
            low, high = 0, len(title)
        else:
            low, high = len(prefix) + start, len(prefix) + end
        out.append([replace(m, start=m.start - low, end=m.end - low) for m in mentions
                    if low <= m.start and m.end <= high])
    return out


def _weighted(items: list[tuple[ScoredText, float]]) -> tuple[float, float]:
    """(score, confidence): means weighted by position weight × confidence."""
    weights = np.array([w * s.confidence for s, w in items])
    if weights.sum() <= 0:
        return 0.0, 0.0
    scores = np.array([s.score for s, _ in items])
    confidences = np.array([s.confidence for s, _ in items])
    return float(weights @ scores / weights.sum()), float(weights @ confidences / weights.sum())


def _label(score: float) -> str:
    return "positive" if score > LABEL_MARGIN else "negative" if score < -LABEL_MARGIN else "neutral"


def _company(name: str, ticker: str, found: list[tuple[ScoredText, float]]) -> CompanyScore:
    score, confidence = _weighted(found)
    strongest, _ = max(found, key=lambda item: abs(item[0].score) * item[1])
    reason = f"“{strongest.text}” ({strongest.label}, {strongest.score:+.2f})"
    if strongest.reasons:
        reason += "; " + "; ".join(strongest.reasons)
    return CompanyScore(name, ticker, score, _label(score), confidence, len(found), reason)
