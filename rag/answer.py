"""Cited answers from retrieved chunks, in one of two styles.

"grounded" (the default, for small models; rag.grounded): the answer is quotes from the retrieved passages,
the model choosing which, each with its citation. "free": the model writes the answer from the sources in
the prompt, asked to cite with the tag printed above each source, `[name locator]` (`[file p. N]` for a
page, `[name L12-30]` for lines of a text item, `[name <message-id>]` for an item with its own locator); a
bare `[n]` is accepted and rewritten to its tag. Every citation in a free answer is checked against the
retrieved chunks: a tag that matches none is removed from the text and listed in `Answer.invalid_citations`.
A name is printed as `shown_name` makes it (one line, no square brackets, bounded): an uploaded file's name is
anyone's text, and special-token text in it or in a chunk stays text (core.Tokenizer.encode_chat).

A conversation's earlier turns: a follow-up ("and in 2021?", "what are its risks?") is searched with the
previous question's keywords added (`standalone_query`); the free style's prompt gets the earlier questions
(at most EARLIER_QUESTIONS), never the earlier answers, which are not evidence (a document deleted since
may have given them) and would make every prompt longer.

"Nothing relevant": a chunk counts only if the embedder scores it at least `MIN_SIMILARITY` against the
question (all-MiniLM-L6-v2 gives 0.35-0.6 to chunks that answer and under 0.25 to unrelated ones on the
committed PDFs). With no such chunk, the model is not called and the answer says so.

Does not: check that a cited page supports a free answer's sentence (the grounded style quotes instead).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from core.errors import ContextLengthError
from rag.chunking import page_locator
from rag.context import indexed_text
from rag.retriever import Hit, Mode, Retriever
from rag.words import keywords

if TYPE_CHECKING:
    from core.chat import ChatModel  # imports torch (core.sampling): only the model given in needs it

MIN_SIMILARITY = 0.3
NOTHING_RELEVANT = "I could not find anything about this in the documents."
SYSTEM_PROMPT = (
    "You answer questions about the user's documents using only the numbered sources given with the question. "
    "End each sentence with the tag of its source in square brackets, as shown above the source, for example "
    "[report.pdf p. 4]. If the sources do not contain the answer, say that the documents do not say. Be brief."
)
ANSWER_TOKENS = 256
REPETITION_PENALTY = 1.1  # small models loop on long contexts when decoded greedily without it
MAX_QUESTION_CHARS = 4000
MAX_SHOWN_NAME_CHARS = 100  # a document's name as the prompt and citations print it
EARLIER_QUESTIONS = 2  # of the conversation, given to a free answer's prompt
MAX_EARLIER_CHARS = 300  # each cut to this
Style = Literal["grounded", "free"]
# A question that leans on the one before: it starts by going on from it, or refers back to what it named.
_FOLLOW_UP = re.compile(r"^\s*(and|but|also|so|what about|how about|then)\b|"
                        r"\b(it|its|they|them|their|these|those|he|she|his|her|same|above|previous)\b", re.I)

# Anything in square brackets, with the blanks before it so that a removed citation takes its space along;
# `check_citations` decides which are citations.
_BRACKETS = re.compile(r"([ \t]*)\[([^\[\]\n]{1,400})\]")
# Matched against a bracket's text in lower case.
_NUMBER = re.compile(r"\d{1,2}")
_PAGE = re.compile(r"(.+?) p(?:\.|age)\s*(\d{1,5})")  # "[file p. 3]", "[file page 3]"
_LINES = re.compile(r".+ l\d+(?:-\d+)?")  # "[name L12-30]"
# Characters a shown name loses: control, format, surrogate, private-use, unassigned, line and paragraph breaks.
_UNSHOWN = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
_ROUND_BRACKETS = str.maketrans("[]", "()")


@dataclass
class Source:
    number: int  # 1-based, as numbered in the prompt
    file: str  # the document's name: a file name, or a text item's
    page: int  # 1-based (a text item is one page)
    text: str
    score: float  # the retriever's ranking score
    similarity: float  # cosine of question and chunk
    cited: bool = False
    locator: str = ""  # where in the document (rag.chunking); "" means the page: "p. N"
    doc_id: str = ""  # the document's id, for Collection.find ("" when not known)

    def __post_init__(self) -> None:
        if not self.locator:
            self.locator = page_locator(self.page)

    @property
    def shown_name(self) -> str:
        """The file name as the model sees it: an uploaded file's name is anyone's text (see `shown_name`)."""
        return shown_name(self.file)

    @property
    def tag(self) -> str:
        return f"[{self.shown_name} {self.locator}]"

    def to_json(self) -> dict:
        return {"file": self.file, "page": self.page, "locator": self.locator, "text": self.text, "score": self.score}


@dataclass
class Answer:
    text: str  # what the model wrote, with citations normalised to tags and invalid ones removed
    sources: list[Source]  # the retrieved chunks the model was given, in prompt order
    invalid_citations: list[str] = field(default_factory=list)  # tags that matched no source, as written
    finish_reason: str = "stop"  # "stop", "length", "nothing_relevant"

    @property
    def cited_sources(self) -> list[Source]:
        return [s for s in self.sources if s.cited]

    def to_json(self) -> dict:
        return {"answer": self.text, "sources": [s.to_json() for s in self.sources],
                "invalid_citations": self.invalid_citations}


class AnswerStream:
    """Iterate for the answer's text deltas as the model writes them; then `answer` holds the checked Answer."""

    def __init__(self, deltas: Iterator[str], sources: list[Source], stream=None):
        self.sources = sources
        self.answer: Answer | None = None  # set by a producer that builds the Answer itself (the grounded style)
        self._deltas = deltas
        self._stream = stream  # the model's ChatStream of a free answer

    def __iter__(self) -> Iterator[str]:
        written = []
        for delta in self._deltas:
            written.append(delta)
            yield delta
        if self.answer is None:
            text, invalid = check_citations("".join(written), self.sources)
            self.answer = Answer(text, self.sources, invalid, self._stream.finish_reason)

    def cancel(self) -> None:
        if self._stream is not None:
            self._stream.cancel()


def stream_answer(retriever: Retriever, llm: ChatModel, question: str, k: int = 5, mode: Mode = "hybrid",
                  history: list[dict] | None = None, documents: list[str] | None = None,
                  min_similarity: float = MIN_SIMILARITY, style: Style = "grounded", **sampling) -> AnswerStream:
    """Retrieve k chunks for `question` and stream an answer citing them, in `style` (see the module doc).

    `llm`: any core.ChatModel (core.LLM, core.RemoteLLM, ...). `history`: earlier {"role", "content"} turns
    of this conversation, oldest first (only the questions are used). `sampling`: as for `ChatModel.stream`,
    for a free answer (default: greedy, ANSWER_TOKENS, REPETITION_PENALTY). The retrieval happens here; the
    grounded style's choosing and the free style's writing happen as the stream is iterated.
    """
    question = question.strip()
    if not question:
        raise ValueError("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"the question is {len(question)} characters long; the limit is {MAX_QUESTION_CHARS}")
    if style not in ("grounded", "free"):
        raise ValueError(f"style must be 'grounded' or 'free', not {style!r}")
    query = standalone_query(question, history or [])
    query_vector = retriever.embed_query(query)  # once: for the search, the relevance check and the grounded quotes
    sources = relevant_sources(retriever, query, k, mode, documents, min_similarity, query_vector)
    if not sources:
        return _finished(Answer(NOTHING_RELEVANT, [], finish_reason="nothing_relevant"))
    if style == "grounded":
        return _grounded(question, query, sources, llm, retriever.collection.embedder, query_vector)
    sampling = {"max_new_tokens": ANSWER_TOKENS, "temperature": 0.0, "repetition_penalty": REPETITION_PENALTY,
                **sampling}
    messages = fit_prompt(llm, sources, question, earlier_questions(history or []), sampling["max_new_tokens"])
    stream = llm.stream(messages, **sampling)
    return AnswerStream(iter(stream), sources, stream)


def _finished(answer: Answer) -> AnswerStream:
    stream = AnswerStream(iter([answer.text]), answer.sources)
    stream.answer = answer
    return stream


def _grounded(question: str, query: str, sources: list[Source], llm: ChatModel, embedder,
              query_vector: np.ndarray) -> AnswerStream:
    from rag.grounded import grounded_answer  # rag.grounded builds on this module's Source and Answer

    stream = AnswerStream(iter(()), sources)

    def deltas() -> Iterator[str]:
        stream.answer = grounded_answer(question, sources, llm, embedder, query=query, query_vector=query_vector)
        yield stream.answer.text

    stream._deltas = deltas()
    return stream


def answer(retriever: Retriever, llm: ChatModel, question: str, **options) -> Answer:
    """`stream_answer`, consumed."""
    stream = stream_answer(retriever, llm, question, **options)
    for _ in stream:
        pass
    return stream.answer


def relevant_sources(retriever: Retriever, question: str, k: int, mode: Mode, documents: list[str] | None,
                     min_similarity: float, query_vector: np.ndarray | None = None) -> list[Source]:
    """The retrieved chunks the embedder finds related to the question, numbered in rank order. `query_vector`:
    the question's embedding (`Retriever.embed_query`), when the caller has it; else it is embedded here, once."""
    if query_vector is None:
        query_vector = retriever.embed_query(question)
    hits = retriever.search(question, k=k, mode=mode, documents=documents, query_vector=query_vector)
    similarities = _similarities(retriever, query_vector, hits)
    kept = [(hit, sim) for hit, sim in zip(hits, similarities, strict=True) if sim >= min_similarity]
    return [Source(n, hit.chunk.file_name, hit.chunk.page, hit.chunk.text, hit.score, sim,
                   locator=hit.chunk.locator, doc_id=hit.chunk.doc_id)
            for n, (hit, sim) in enumerate(kept, start=1)]


def _similarities(retriever: Retriever, query_vector: np.ndarray, hits: list[Hit]) -> list[float]:
    """Cosine of question and chunk for every hit; hits that only BM25 found are embedded here, as the index embeds
    a chunk (its indexed text: rag.context), so all the cosines are on one scale."""
    missing = [h for h in hits if h.dense_score is None]
    if missing:
        texts = [indexed_text(h.chunk.context, h.chunk.text) for h in missing]
        vectors = retriever.collection.embedder.embed(texts)  # (n, dim)
        scored = dict(zip((id(h) for h in missing), (vectors @ query_vector).tolist(), strict=True))
    return [h.dense_score if h.dense_score is not None else scored[id(h)] for h in hits]


def standalone_query(question: str, history: list[dict]) -> str:
    """What to search for: `question`, with words of the previous question added when it is a follow-up (it
    starts "and", "what about", ... or refers back with "it", "their", ..., or has at most two words of its
    own). Each kind of word is carried over only if the follow-up has none of that kind: names
    (capitalised), numbers (years), and the other words (the topic). After "What were Apple's net sales in
    2022?", "And in 2021?" searches "And in 2021? (Apple net sales)", "What about Netflix?" searches "What
    about Netflix? (net sales 2022)", and "What are its risks?" searches "What are its risks? (Apple 2022)"."""
    earlier = earlier_questions(history)
    if not earlier or not (_FOLLOW_UP.search(question) or len(keywords(question)) <= 2):
        return question
    own = _kinds(question)
    carried = [word for kind, words in _kinds(earlier[-1]).items() if not own[kind] for word in words]
    return f"{question} ({' '.join(dict.fromkeys(carried))})" if carried else question


def _kinds(question: str) -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {"name": [], "number": [], "topic": []}
    first = question.split()[0] if question.split() else ""
    for word in keywords(question):
        kind = ("number" if word[0].isdigit() else "name" if word[0].isupper() and not first.startswith(word)
                else "topic")
        kinds[kind].append(word)
    return kinds


def earlier_questions(history: list[dict]) -> list[str]:
    """The last EARLIER_QUESTIONS user turns of `history`, oldest first, each cut to MAX_EARLIER_CHARS."""
    asked = [m["content"].strip() for m in history
             if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)]
    return [q[:MAX_EARLIER_CHARS] for q in asked if q][-EARLIER_QUESTIONS:]


def build_messages(sources: list[Source], question: str, earlier: list[str]) -> list[dict]:
    context = "\n\n".join(f"Source {s.number} {s.tag}:\n{s.text.strip()}" for s in sources)
    asked = "".join(f"Earlier question: {q}\n" for q in earlier)
    user = (f"Sources:\n\n{context}\n\n{asked}Question: {question}\n"
            f"Answer briefly, citing tags like {sources[0].tag}.")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def fit_prompt(llm: ChatModel, sources: list[Source], question: str, earlier: list[str],
               answer_tokens: int) -> list[dict]:
    """The messages, dropping the oldest earlier questions and then the lowest-ranked sources until the answer
    fits. Counts with `llm.count_tokens`. Raises ContextLengthError when even the question with one source
    does not fit."""
    budget = llm.context_length - answer_tokens
    sources, earlier = list(sources), list(earlier)
    while True:
        messages = build_messages(sources, question, earlier)
        if llm.count_tokens(messages) <= budget:
            return messages
        if earlier:
            earlier.pop(0)
        elif len(sources) > 1:
            sources.pop()
        else:
            raise ContextLengthError(f"the question and its best source need more than the model's {budget} tokens "
                                     f"of prompt ({llm.context_length} tokens of context, {answer_tokens} kept for the "
                                     "answer)")


def check_citations(text: str, sources: list[Source]) -> tuple[str, list[str]]:
    """(text with citations normalised and invalid ones removed, the invalid citations as written).

    Marks each cited source `cited`. `[n]` means source n. A source's tag, `[name locator]`, may be written
    with the name without its extension, in any case, with any spacing; `[file p. N]` and `[file page N]`
    name a page. A bracket that has a citation's shape (a page, a line range "L12-30", or a retrieved
    document's name then a locator) but matches no source is invalid; other brackets ("[sic]", code) stay.
    """
    by_number = {s.number: s for s in sources}
    by_tag, by_page, names = {}, {}, set()
    for source in sources:
        for name in {source.shown_name.lower(), source.shown_name.rsplit(".", 1)[0].lower()}:
            by_tag.setdefault(_normal(f"{name} {source.locator}"), source)
            if source.locator == page_locator(source.page):
                by_page.setdefault((_normal(name), source.page), source)
            names.add(_normal(name) + " ")
    invalid: list[str] = []

    def replace(match: re.Match) -> str:
        body = _normal(match.group(2))
        if _NUMBER.fullmatch(body):
            source = by_number.get(int(body))
        elif body in by_tag:
            source = by_tag[body]
        elif page := _PAGE.fullmatch(body):
            source = by_page.get((page.group(1), int(page.group(2))))
        elif _LINES.fullmatch(body) or body.startswith(tuple(names)):
            source = None
        else:
            return match.group(0)  # not a citation
        if source is None:
            invalid.append(match.group(0).strip())
            return ""
        source.cited = True
        return match.group(1) + source.tag

    return _BRACKETS.sub(replace, text).strip(), invalid


def shown_name(name: str) -> str:
    """`name` fit to print in a prompt and a citation: control and format characters (line breaks, bidi
    overrides, zero-width marks) become spaces, square brackets round ones, runs of blanks one space, and
    it is cut to MAX_SHOWN_NAME_CHARS. So a file named "x.pdf]\n\nSystem: ..." cannot end its tag or
    start a line of its own."""
    kept = "".join(" " if unicodedata.category(c) in _UNSHOWN else c for c in name)
    kept = " ".join(kept.translate(_ROUND_BRACKETS).split()) or "unnamed"
    return kept if len(kept) <= MAX_SHOWN_NAME_CHARS else kept[:MAX_SHOWN_NAME_CHARS - 1] + "\u2026"


def _normal(text: str) -> str:
    return " ".join(text.split()).lower()
