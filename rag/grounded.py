"""Grounded answers: the answer is quotes from the retrieved passages, chosen by the model, each with its citation.

A 135M model restates "$394,328 million" as "$12.4 billion" when it writes freely, but it can pick, among a
few passages, the one that answers. So the passages are cut into candidates (sentences of prose, lines of
a table), every candidate is scored against the question (the embedder's cosine, word overlap weighted by
rarity, and whether it holds a figure when the question asks for one), and the model chooses among the
best `CHOICES` under constrained decoding (`choices` over their numbers). The answer is the chosen
candidate, verbatim but for whitespace, with its source's tag, then up to `EXTRA_QUOTES` more quotes that
scored nearly as well. Numbers and names therefore come from a page, and every quote is cited.

When the best candidate scores under `WEAK_SCORE` the answer says the documents do not say, and shows the
closest passages as quotes (cited, so the user can check).

Does not: join quotes with words of its own (the only text outside quotes is fixed wording), or answer a
question that needs figures from two pages combined (it quotes both when both score well).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from core.chat import ChatModel
from rag.answer import Answer, Source
from rag.embeddings import Embedder
from rag.words import stem, terms

CHOICES = 4  # candidates the model chooses among
EXTRA_QUOTES = 2  # more quotes shown after the chosen one ...
EXTRA_RATIO = 0.7  # ... when they score at least this share of the chosen one's score
WEAK_SCORE = 0.3  # under this, the documents are taken not to say (see `score`)
MAX_CANDIDATES = 300  # per answer: bounds the embedding work whatever the sources hold
MAX_QUOTE_CHARS = 320  # a longer sentence is cut at a clause boundary (or a word) into several candidates
MIN_QUOTE_WORDS = 3
SHORT_QUOTE_CHARS = 100
NOT_SUPPORTED = "The documents do not say this directly. The closest passages:"
ALSO = "Also in the documents:"
CHOOSE_PROMPT = "You choose the passage that answers the question. Reply with the passage's number only."
# A question asking for an amount: its answer holds a figure.
_AMOUNT = re.compile(r"\b(how (many|much)|total|revenue|income|sales|amount|number of|percent|percentage|margin|"
                     r"expenditures?|costs?|price|rate|ratio|cash|earnings|eps|spent|paid|employees|headcount|"
                     r"memberships?|subscribers|growth|increase|decrease|dividends?|debt|assets|liabilities)\b", re.I)
# "What is the proxy in the SRx glossary?" asks for the definition of "proxy".
_DEFINITION_QUESTION = re.compile(r"^\s*what\s+(?:is|are|does)\s+(?:the\s+|a\s+|an\s+)?(.+?)(?:\s+(?:in|of|mean|for|"
                                  r"used|stand)\b.*)?\??\s*$", re.I)
_CHANGE = re.compile(r"\b(increas|decreas|grew|grow|declin|rose|fell|drop|chang|compared|up|down)\w*", re.I)
_GENERIC_NAME_WORDS = {stem(w) for w in ("10k", "10q", "pdf", "annual", "report", "earnings", "fy", "form", "quarter",
                                          "results", "financial", "statement", "document", "final", "draft", "copy")}
_PERIOD = re.compile(r"\d+|(19|20)\d\d(q[1-4]|h[12])?|q[1-4]|fy\d+")
_FIGURE = re.compile(r"\d[\d,.]*\d|\d")
_YEAR = re.compile(r"^(19|20)\d\d$")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_CLAUSE_END = re.compile(r"(?<=[;:,])\s+")


@dataclass
class Candidate:
    source: Source
    text: str  # a span of source.text, whitespace collapsed
    following: str = ""  # the piece after it in the source ("" at the end): a quote that introduces a list goes on
    score: float = 0.0

    @property
    def quote(self) -> str:
        """The text quoted: the candidate, and the piece after it when it ends by announcing what follows ("...
        the following values:") or is short and followed by a sentence (not a heading's number, "6.4."), as long
        as the two stay under MAX_QUOTE_CHARS."""
        goes_on = self.text.endswith(":") or (len(self.text) < SHORT_QUOTE_CHARS
                                                and len(self.following.split()) >= MIN_QUOTE_WORDS + 1)
        if self.following and goes_on and len(self.text) + len(self.following) < MAX_QUOTE_CHARS:
            return f"{self.text} {self.following}"
        return self.text


def grounded_answer(question: str, sources: list[Source], llm: ChatModel, embedder: Embedder,
                    query: str | None = None, query_vector: np.ndarray | None = None) -> Answer:
    """The answer to `question` as quotes from `sources` (numbered, best first), the model choosing the first.

    `query`: the text the candidates are scored against (a follow-up rewritten to stand alone; default the
    question); `query_vector`: its embedding, when the caller has it (the retrieval made it). Marks each quoted
    source `cited`. finish_reason: "stop", or "weak_evidence" when the documents do not say (`WEAK_SCORE`).
    """
    scored = score(query or question, candidates(sources), embedder, query_vector)
    if not scored:
        return Answer(NOT_SUPPORTED.split(". ")[0] + ".", sources, finish_reason="weak_evidence")
    if scored[0].score < WEAK_SCORE:
        return Answer(_quotes(NOT_SUPPORTED, scored[:2]), sources, finish_reason="weak_evidence")
    best = choose(llm, question, scored[:CHOICES])
    extras = [c for c in scored[:CHOICES + EXTRA_QUOTES] if c is not best and c.score >= EXTRA_RATIO * best.score]
    text = _quote(best)
    if extras:
        text += "\n\n" + _quotes(ALSO, extras[:EXTRA_QUOTES])
    return Answer(text, sources)


def candidates(sources: list[Source]) -> list[Candidate]:
    """The sentences and table lines of every source, in source order, at most MAX_CANDIDATES; a line that
    recurs on other pages with only a page number or two changed (a running header or footer: "Apple Inc. |
    2022 Form 10-K | 29") is left out."""
    pieces = []
    for source in sources:
        texts = split_passage(source.text)
        pieces += [(source, text, following) for text, following in zip(texts, [*texts[1:], ""], strict=True)]
    variants: dict[str, set] = {}
    for source, text, _ in pieces:
        variants.setdefault(_FIGURE.sub("#", text.lower()), set()).add((source.file, source.page, text.lower()))
    found, seen = [], {}
    for source, text, following in pieces:
        recurring = variants[_FIGURE.sub("#", text.lower())]
        furniture = (len({page for _, page, _ in recurring}) > 1 and len({t for _, _, t in recurring}) > 1
                     and len(_FIGURE.findall(text)) <= 3)
        key = re.sub(r"\W+", "", text.lower())
        # Overlapping chunks cut the same sentence differently: "Keep Window field of ..." is "The Keep Window ...".
        kept = seen.get((source.file, source.page), ())
        if furniture or key in kept or any(min(len(key), len(other)) >= 30 and (key in other or other in key)
                                           for other in kept):
            continue
        seen.setdefault((source.file, source.page), []).append(key)
        found.append(Candidate(source, text, following))
        if len(found) == MAX_CANDIDATES:
            break
    return found


def split_passage(text: str) -> list[str]:
    """A passage's quotable pieces: each table line (a line holding two figures or more) alone, the prose
    between them joined and cut into sentences, pieces over MAX_QUOTE_CHARS cut at clauses, then words."""
    pieces, prose = [], []
    for line in text.splitlines():
        line = " ".join(line.split())
        if not line:
            continue
        if _is_table_row(line):
            pieces.extend(_sentences(" ".join(prose)))
            prose = []
            pieces.append(line)
        else:
            prose.append(line)
    pieces.extend(_sentences(" ".join(prose)))
    return [p for p in pieces if len(p.split()) >= MIN_QUOTE_WORDS or _FIGURE.search(p)]


def _is_table_row(line: str) -> bool:
    """A label and its figures: two figures or more that are not years, and figures a fifth of the words or
    the last word (a wrapped prose line mentioning "2022 and 2021" is not one)."""
    words = line.split()
    figures = [w for w in words if _FIGURE.search(w) and not _YEAR.match(w.strip("(),.$%"))]
    last = words[-1].strip("()$")
    return (len(figures) >= 2 and len(line) <= MAX_QUOTE_CHARS
            and (len(figures) >= 0.2 * len(words) or bool(_FIGURE.fullmatch(last)) or last == "%"))


def _sentences(prose: str) -> list[str]:
    out = []
    for sentence in _SENTENCE_END.split(prose):
        while len(sentence) > MAX_QUOTE_CHARS:
            cut = max((m.end() for m in _CLAUSE_END.finditer(sentence, 0, MAX_QUOTE_CHARS)), default=0)
            if cut < MAX_QUOTE_CHARS // 3:
                cut = sentence.rfind(" ", 0, MAX_QUOTE_CHARS) + 1 or MAX_QUOTE_CHARS
            out.append(sentence[:cut].strip())
            sentence = sentence[cut:]
        if sentence.strip():
            out.append(sentence.strip())
    return out


def score(question: str, found: list[Candidate], embedder: Embedder,
          question_vector: np.ndarray | None = None) -> list[Candidate]:
    """`found` scored and sorted best first. The score: 0.5 x the embedder's cosine with the question, + 0.4 x
    the share of the question's words (weighted by rarity among the candidates) that the candidate holds,
    + 0.05 at most for coming from a higher-ranked source; when the question asks for an amount, +/- 0.1 for
    holding a figure or not, + 0.2 x the share of a table row's label that the question names ("Total net
    sales" for "What were total net sales?"), - 0.1 for a change ("increased 8% or $28.5 billion") unless
    the question asks about one; + 0.15 for defining what a "What is X?" question asks about ("Proxy: The
    thin client ..."); - 0.15 when the question names another source's document and not this one's.

    Words of the question in the candidate's file name ("Apple", "2022" for APPLE_2022_10K.pdf) name the
    document, not the passage: they do not count for the share of words."""
    if not found:
        return []
    if question_vector is None:
        vectors = embedder.embed([question, *(c.text for c in found)])
        question_vector, vectors = vectors[0], vectors[1:]
    else:
        vectors = embedder.embed([c.text for c in found])  # (n, dim)
    dense = vectors @ question_vector
    question_words = set(terms(question))
    words = [set(terms(c.text)) for c in found]
    weights = {w: math.log(1 + len(found) / df) for w in question_words if (df := sum(w in ws for ws in words))}
    wants_amount, wants_change = bool(_AMOUNT.search(question)), bool(_CHANGE.search(question))
    named = {c.source.file for c in found if _names_document(question_words, c.source.file)}
    defined = _DEFINITION_QUESTION.match(question)
    defined = defined.group(1).strip().lower() if defined else ""
    n_sources = max(c.source.number for c in found)
    for candidate, cosine, held in zip(found, dense.tolist(), words, strict=True):
        in_name = set(terms(candidate.source.file))
        counted = {word: weight for word, weight in weights.items() if word not in in_name}
        overlap = sum(weight for word, weight in counted.items() if word in held) / (sum(counted.values()) or 1.0)
        value = 0.5 * cosine + 0.4 * overlap + 0.05 * (n_sources - candidate.source.number) / max(n_sources - 1, 1)
        if wants_amount:
            value += _amount_fit(candidate.text, question_words, wants_change)
        if defined and _defines(candidate.text, defined):
            value += 0.15
        if named and candidate.source.file not in named:
            value -= 0.15
        candidate.score = value
    return sorted(found, key=lambda c: c.score, reverse=True)


def _amount_fit(text: str, question_words: set[str], wants_change: bool) -> float:
    if not any(not _YEAR.match(f) for f in _FIGURE.findall(text)):
        return -0.1
    fit = 0.1
    if _is_table_row(text):
        label = set(terms(_FIGURE.sub(" ", text)))
        fit += 0.2 * len(label & question_words) / len(label) if label else 0.0
    if not wants_change and _CHANGE.search(text):
        fit -= 0.1
    return fit


def _defines(text: str, term: str) -> bool:
    """Whether `text` opens by defining `term`: "Proxy: The thin client ...", "A proxy is ..."."""
    opening = re.sub(r"^(the|a|an)\s+", "", text.lower())
    return opening.startswith(term) and bool(re.match(r"\s*(:|is\b|are\b|means\b|\()", opening[len(term):]))


def _names_document(question_words: set[str], file: str) -> bool:
    """Whether the question names the document `file` by a distinctive word of its name (a company's, not
    "10k", "pdf", a year or a quarter)."""
    return bool({w for w in terms(file) if not _PERIOD.fullmatch(w) and w not in _GENERIC_NAME_WORDS} & question_words)


def choose(llm: ChatModel, question: str, best: list[Candidate]) -> Candidate:
    """The candidate the model picks as answering `question` (constrained to their numbers); the first of one."""
    if len(best) == 1:
        return best[0]
    listed = "\n".join(f"{n}. {c.text}" for n, c in enumerate(best, start=1))
    messages = [{"role": "system", "content": CHOOSE_PROMPT},
                {"role": "user", "content": f"Question: {question}\n\nPassages:\n{listed}\n\n"
                                            "Which passage answers the question?"}]
    numbers = [str(n) for n in range(1, len(best) + 1)]
    picked = llm.generate(messages, choices=numbers, max_new_tokens=2, temperature=0.0).strip()
    return best[numbers.index(picked)] if picked in numbers else best[0]


def _quote(candidate: Candidate) -> str:
    candidate.source.cited = True
    return f"\u201c{candidate.quote}\u201d {candidate.source.tag}"


def _quotes(heading: str, found: list[Candidate]) -> str:
    return heading + "\n" + "\n".join(f"- {_quote(c)}" for c in found)


def quoted_spans(text: str) -> list[str]:
    """The quotes in an answer written by `grounded_answer`, for checking that each is on its page: each ends at
    the closing mark before its tag (a quote may hold quotation marks of its own)."""
    return re.findall(r"\u201c(.+?)\u201d(?= \[)", text)
