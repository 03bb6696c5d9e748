"""Built-in tools the apps share: a safe calculator, the current date and time, and tools over a RAG collection.

`calculator` parses with `ast` and walks a whitelist (numbers, + - * / // % **, unary signs, a few
math functions and constants): no eval, no names or attributes beyond the list, and exponents, factorials
and round's digits bounded so `9**9**9` or `round(1, -10**7)` is refused at once instead of filling memory or
holding the interpreter (a sync tool's timeout cannot stop a computation in C). `rag_tools(collection)` makes the
tools that read one collection: `search_documents`, `read_page` and `list_documents`;
`summarize_tool(collection, model)` one that has a model summarise a document from its first pages.

The RAG tools can write down every passage they show the model, as rag.answer.Sources (`found=`), so an app can
answer from what the run read rather than from what the model wrote; and the search query can be held to
phrases of the question (`query_spans=`, made by `question_spans`), for a small model that otherwise searches
for words of its own ("2022", the tool's name).

Does not: do symbolic maths, units, or comparisons; fetch anything from the network.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import math
import operator
import re
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agents.tools import Tool, ToolArgumentError, tool

if TYPE_CHECKING:
    from core.chat import ChatModel
    from rag.answer import Source
    from rag.collection import Collection
    from rag.store import DocumentRecord, StoredChunk

MAX_EXPRESSION_CHARS = 300
MAX_EXPONENT = 1000  # |b| in a ** b
MAX_FACTORIAL = 1000
MAX_ROUND_DIGITS = 100  # |ndigits| in round(x, ndigits): round(1, -10**7) computes 10**(10**7)
MAX_INT_BITS = 4096  # no intermediate integer beyond this (about 1,233 digits)
SNIPPET_CHARS = 400  # of each search hit shown to the model
PAGE_CHARS = 4000  # of a page shown to the model
SUMMARY_CHARS = 6000  # of a document's first pages that summarize_document reads
SUMMARY_TOKENS = 160
SPAN_WORDS = 5  # the longest phrase of the question a query may be
MAX_SPANS = 200  # phrases of a question offered as queries: the schema and the prompt list them all
MAX_SPAN_CHARS = 100
_WORD = re.compile(r"\w+(?:[-.'/]\w+)*")  # "SP 800-90B", "markov.py" and "don't" stay one word each

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
_FUNCTIONS = {"sqrt": math.sqrt, "log": math.log, "log10": math.log10, "log2": math.log2, "exp": math.exp,
              "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos,
              "atan": math.atan, "degrees": math.degrees, "radians": math.radians, "floor": math.floor,
              "ceil": math.ceil, "abs": abs, "round": round, "min": min, "max": max, "hypot": math.hypot,
              "factorial": math.factorial}


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression and return the number.

    Args:
        expression: the arithmetic to do, with numbers, + - * / // % ** and parentheses, and the functions
            sqrt, log, exp, sin, cos, tan, floor, ceil, abs, round, min, max, factorial
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"the expression is {len(expression)} characters long; the limit is {MAX_EXPRESSION_CHARS}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise ValueError(f"not an arithmetic expression: {error.msg}") from None
    value = _evaluate(tree.body)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponent {right} is too large (the limit is {MAX_EXPONENT})")
        if isinstance(node.op, ast.Pow) and isinstance(left, int) and left.bit_length() * right > MAX_INT_BITS:
            raise ValueError(f"the result has more than {MAX_INT_BITS} bits")
        return _checked(_BINARY[type(node.op)](left, right))
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
            and not node.keywords):
        arguments = [_evaluate(argument) for argument in node.args]
        if node.func.id == "factorial" and arguments and abs(arguments[0]) > MAX_FACTORIAL:
            raise ValueError(f"factorial of {arguments[0]} is too large (the limit is {MAX_FACTORIAL})")
        if node.func.id == "round" and len(arguments) > 1 and abs(arguments[1]) > MAX_ROUND_DIGITS:
            raise ValueError(f"round to {arguments[1]} digits is out of range (the limit is ±{MAX_ROUND_DIGITS})")
        return _checked(_FUNCTIONS[node.func.id](*arguments))
    allowed = ", ".join([*_FUNCTIONS, *_CONSTANTS])
    raise ValueError(f"unsupported expression {ast.unparse(node)!r}: use numbers, + - * / // % **, parentheses "
                     f"and {allowed}")


def _checked(value):
    if isinstance(value, complex):
        raise ValueError("the result is a complex number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ValueError(f"the result has more than {MAX_INT_BITS} bits")
    return value


@tool
def current_datetime(timezone: str = "UTC") -> str:
    """The current date, weekday and time.

    Args:
        timezone: an IANA time zone name such as "UTC", "Europe/Paris" or "America/New_York"
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}; use an IANA name such as 'Europe/Paris'") from None
    now = datetime.now(zone)
    return f"{now:%A %Y-%m-%d %H:%M:%S} {timezone} (UTC{now:%z})"


def question_spans(question: str, max_words: int = SPAN_WORDS, limit: int = MAX_SPANS) -> list[str]:
    """The phrases of `question` a search may use: its runs of 1 to `max_words` consecutive words, none starting or
    ending with a stop word, each once, in the order they occur; the shortest kept when there are over `limit`.

    Words are joined by one space, with punctuation between them dropped. A question of stop words alone gives
    its words as one phrase; one without any word gives []. The stop words are rag.words's (BM25's, and words of
    asking): they add nothing to a search.
    """
    from rag.words import STOPWORDS  # here, not at the top: `import agents` stays free of bm25s

    words = _WORD.findall(question)
    spans = {}  # phrase -> (start, length), first occurrence
    for length in range(1, max_words + 1):
        for start in range(len(words) - length + 1):
            run = words[start:start + length]
            if run[0].lower() in STOPWORDS or run[-1].lower() in STOPWORDS:
                continue
            phrase = " ".join(run)
            if len(phrase) <= MAX_SPAN_CHARS and len(spans) < limit:
                spans.setdefault(phrase, (start, length))
    if not spans and words:
        return [" ".join(words)[:MAX_SPAN_CHARS]]
    return sorted(spans, key=spans.get)


def rag_tools(collection: Collection, k: int = 5, retriever=None,
              lock: contextlib.AbstractContextManager | None = None, *, found: list[Source] | None = None,
              query_spans: list[str] | None = None, snippet_chars: int = SNIPPET_CHARS) -> list[Tool]:
    """search_documents, read_page and list_documents over `collection`.

    `retriever`: a rag.Retriever of the collection to share (its BM25 index is built once per retriever);
    default: a new one. `lock`: held while a tool uses the collection, for an app that shares it between
    threads (a collection is used by one thread at a time); default: none.

    `found`: a list the tools append each passage they show to, as a rag.answer.Source numbered from 1 in the
    order found, once per (doc_id, page, text): a search's hits with the retriever's score and their cosine to
    the query; a page read whole as its chunks, with score and similarity 0 (nothing ranked them).
    `query_spans`: the only queries search_documents accepts (an `enum` in its schema, so constrained decoding
    writes one of them), e.g. `question_spans(question)`; default: any text. `snippet_chars`: of each hit shown.
    """
    if query_spans is not None and not query_spans:
        raise ValueError("query_spans is empty: give at least one query, or None for any")
    from rag.answer import Source, relevant_sources  # here, not at the top: `import agents` stays free of bm25s
    from rag.retriever import Retriever  # and numpy

    if retriever is None:
        retriever = Retriever(collection)
    store = collection.store
    lock = lock or contextlib.nullcontext()

    @tool
    def search_documents(query: str, k: int = k) -> str:
        """Search the documents for passages about a question or topic; returns the best passages with file and page.

        Args:
            query: what to look for, in a few words
            k: how many passages to return
        """
        with lock:
            hits = relevant_sources(retriever, query, max(1, min(k, 20)), "hybrid", None, min_similarity=-1.0)
        if not hits:
            return "No passages found: the collection is empty."
        _collect(found, hits)
        return "\n\n".join(f"[{n}] {hit.file} {hit.locator}: {_cut(' '.join(hit.text.split()), snippet_chars)}"
                           for n, hit in enumerate(hits, start=1))

    @tool
    def read_page(document: str, page: int) -> str:
        """Read one page of a document in full.

        Args:
            document: the document's file name (as search_documents shows it)
            page: the page number, from 1
        """
        with lock, store.snapshot():
            record = _document(collection, document)
            if not 1 <= page <= record.pages_total:
                raise ValueError(f"{record.file_name} has pages 1 to {record.pages_total}, not {page}")
            text = collection.page_text(record.doc_id, page)
            chunks = _page_chunks(collection, record.doc_id, page) if found is not None and text else []
        if not text:
            why = " (a scan without a text layer)" if page in record.pages_needing_ocr else ""
            return f"{record.file_name}, page {page} has no text{why}."
        _collect(found, [Source(0, c.file_name, c.page, c.text, 0.0, 0.0, locator=c.locator, doc_id=c.doc_id)
                         for c in chunks])
        return f"{record.file_name}, page {page}:\n{_cut(text, PAGE_CHARS)}"

    @tool
    def list_documents() -> str:
        """List the documents in the collection, with their page counts."""
        with lock:
            documents = store.documents()
        if not documents:
            return "The collection is empty."
        return "\n".join(f"{d.file_name} ({d.pages_total} pages)" for d in documents)

    if query_spans is not None:
        search_documents = _queries_limited(search_documents, list(query_spans))
    return [search_documents, read_page, list_documents]


def _queries_limited(search: Tool, spans: list[str]) -> Tool:
    """`search` accepting only the queries in `spans`: an enum in its schema, checked by its validator."""
    allowed = set(spans)
    parameters = dict(search.parameters, properties=dict(search.parameters["properties"]))
    parameters["properties"]["query"] = {**parameters["properties"]["query"], "enum": spans,
                                         "description": "what to look for: a phrase of the question"}
    validate = search.validator

    def validator(arguments):
        kwargs = validate(arguments)
        if kwargs["query"] not in allowed:
            raise ToolArgumentError(f"invalid arguments for {search.name}: query: {kwargs['query'][:100]!r} is not "
                                    "a phrase of the question; use words of the question as they are written")
        return kwargs

    return dataclasses.replace(search, parameters=parameters, validator=validator)


def _collect(found: list[Source] | None, sources: list[Source]) -> None:
    """Append the sources `found` lacks, numbered on from its last."""
    if found is None:
        return
    seen = {(s.doc_id, s.page, s.text) for s in found}
    for source in sources:
        if (source.doc_id, source.page, source.text) not in seen:
            seen.add((source.doc_id, source.page, source.text))
            found.append(dataclasses.replace(source, number=len(found) + 1))


def _page_chunks(collection: Collection, doc_id: str, page: int) -> list[StoredChunk]:
    store = collection.store
    chunks = [c for c in store.chunks_by_ids(store.chunk_ids(doc_id)) if c.page == page]
    return sorted(chunks, key=lambda c: (c.start, c.end))


def summarize_tool(collection: Collection, model: ChatModel, lock: contextlib.AbstractContextManager | None = None,
                   max_chars: int = SUMMARY_CHARS) -> Tool:
    """summarize_document: `model` summarises a document of `collection` from its first `max_chars` characters.

    `lock`: as for `rag_tools`; held while the pages are read, not while the model writes. The summary is the
    model's own writing: a small model's may state what the pages do not say.
    """
    lock = lock or contextlib.nullcontext()

    @tool
    def summarize_document(document: str) -> str:
        """Summarise one document in a few sentences, from its first pages.

        Args:
            document: the document's file name, as list_documents or search_documents show it
        """
        with lock:
            record = _document(collection, document)
            text = ""
            for number in range(1, record.pages_total + 1):
                text += collection.page_text(record.doc_id, number) + "\n"
                if len(text) >= max_chars:
                    break
        prompt = [{"role": "user", "content": f"Summarise this document in three sentences.\n\n{text[:max_chars]}"}]
        return model.generate(prompt, max_new_tokens=SUMMARY_TOKENS, temperature=0.0, repetition_penalty=1.1)

    return summarize_document


def _document(collection: Collection, name: str) -> DocumentRecord:
    """The document named `name` (file name or id); ValueError listing the documents when there is none."""
    record = collection.find(name)
    if record is None:
        names = ", ".join(d.file_name for d in collection.documents()) or "none"
        raise ValueError(f"no document {name!r}; the documents are: {names}")
    return record


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."
