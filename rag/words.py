"""A text's words that carry meaning: keywords as written (to carry a question's subject over to a follow-up)
and their crude stems (to match a question's words against a passage's).

The stop words are bm25s's English list (the one BM25 already drops), plus a few words of asking.
"""

from __future__ import annotations

import re

from bm25s.stopwords import STOPWORDS_EN_PLUS

STOPWORDS = frozenset(STOPWORDS_EN_PLUS) | {"please", "tell", "could", "would", "previous", "show", "give"}
_WORD = re.compile(r"[^\W_](?:[\w$%'.,-]*[^\W_])?")


def keywords(text: str) -> list[str]:
    """The words of `text` that are not stop words, as written, in order ("Apple's", "2022", "10-K")."""
    words = (word.removesuffix("'s").removesuffix("\u2019s") for word in _WORD.findall(text))
    return [word for word in words if word.lower() not in STOPWORDS]


def terms(text: str) -> list[str]:
    """The stems of the lower-cased alphanumeric words of `text` that are not stop words."""
    return [stem(word) for word in re.findall(r"[a-z0-9]+", text.lower())
            if word not in STOPWORDS and (len(word) > 1 or word.isdigit())]


def stem(word: str) -> str:
    """A crude stem, enough to match "memberships" with "membership" and "sales" with "sale"."""
    for suffix, replacement in (("ies", "y"), ("ss", "ss"), ("s", ""), ("ing", ""), ("ed", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: len(word) - len(suffix)] + replacement
            break
    return word[:6]
