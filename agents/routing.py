"""Routing: a small model's step as two decisions, which tool (scored), then its arguments (spans of the task).

One constrained decoding over every tool's schema lets a 135M model mix the decisions up: the
calculator for a weather question, the docstring's example city for a currency one. With routing,
each step of an `Agent(routing=Routing(...))`:

1. scores the candidates, the tools and `final_answer`, by the model's log-probability of the reply
   starting `{"tool": "<name>"` (`core.LLM.score`: one forward over the prompt, whose prefix is cached,
   and one batch over the candidates). The router keeps only its best `top_k` tools as candidates
   (final_answer always is) and adds its prior. The router's score of a tool is the
   cosine of the task to the tool's text (name, description and examples; see `tool_text`) under the
   embedded MiniLM, plus `lexical` times the words the two share, weighted by rarity (`lexical_scores`):
   MiniLM blurs tools that differ in a word ("internet" or "documents", "currency" or "unit"), which a
   task often says. The prior is `weight * log_softmax(score / temperature)`, added to the model's
   log-probabilities; final_answer gets a fixed score, the bar a tool must clear. Self-check: a chosen
   tool whose score is under `min_cosine` is not called, the agent answers. A model without `score` (a
   remote one) picks by constrained `choices` among the router's best `top_k` instead. A tool that needs a
   number of the input (a from-input number, an arithmetic argument) is no candidate when there is none.
2. builds the chosen tool's call under its schema, where every argument "from the input" is an `enum` of
   what the task, the user's earlier turns and the tools' results so far say (in that order of
   preference, up to `max_spans`; a file name a search found can be read next): their quoted passages and
   phrases (runs of up to `max_span_words` words, never starting or ending with a stop word; none made
   only of the tool's own words: "web" is how a task names search_web, not what to search) for a string,
   only the email addresses (URLs) for one described as an email address (a URL), the numbers written
   there for a number. A parameter is from the input when annotated `Annotated[str, FromInput]`, or, with
   `infer_from_input`, when it is a plain string or number whose name and description do not say it is
   free text (a body, an expression, ...); `Annotated[str, FreeText]` keeps one free. One with nothing
   to choose from (no number in the task) stays free. An arithmetic argument (`Annotated[str, Arithmetic]`,
   or inferred from "expression", "arithmetic", ...) is an enum of `expressions` over the task's numbers;
   an enum (a Literal) the task names values of is held to those ("in fahrenheit"); an unmarked parameter named
   `text` to what the task quotes or gives after a colon, when it does (`passages`: "count the words in: ...").
   Then the leading arguments with at most `scored_values` values are chosen by the model's scores of the whole call so
   far (`score_arguments`, a beam of `beam` calls), not by greedy decoding; when that chose every
   argument, the call is written as it is, with nothing left to decode (`Route.call`).

The step records the scores (`Step.routing`: the tools', and the arguments' under "arguments"), so a
trace shows why a tool and its arguments were chosen. Figures: bench/results/agents.md (whole runs),
bench/results/agents_routing.txt (the tool choice alone, per setting).

After a tool's result the tools already called are no candidates, another tool must be nearly as relevant
to the task as the one called to beat answering (`follow_margin`), and once a run has results its final
answer is one of them, chosen by the model's scores (`route`'s `called` and `results`): a small model repeats
its call, and restates a result wrongly, where it can choose it right.

Does not: call a tool twice in a run (a task that needs the weather in two cities gets one), offer a
value the task does not write (a ticker for a company's name, "USD" for "US dollars"), or constrain free
text (a body; a `text` argument is held to what the task quotes or gives after a colon, when it does).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import math
import re
import sys
import threading
import typing
from dataclasses import dataclass
from typing import Any

from agents.steps import FINAL_ANSWER_DESCRIPTION, step_schema
from agents.tools import FINAL_ANSWER, Tool
from core.errors import ContextLengthError


class FromInput:
    """`Annotated[str, FromInput]`: the argument is a phrase (or a number) of the user's own words."""


class FreeText:
    """`Annotated[str, FreeText]`: the argument is written freely, never inferred to be from the input."""


class Arithmetic:
    """`Annotated[str, Arithmetic]`: the argument is arithmetic over the numbers of the task (`expressions`)."""


# Words in a parameter's name or description that mark it as text to write, not to copy from the task.
FREE_TEXT_WORDS = frozenset({"body", "text", "content", "message", "expression", "description", "summary",
                             "prompt", "answer", "reply", "note", "comment", "instructions", "formula", "sql",
                             "script", "json", "html", "markdown", "template", "arithmetic"})
FREE_TEXT_NAMES = FREE_TEXT_WORDS | {"code", "source", "program"}  # in a name only: "the currency code" is short
# Words in a string parameter's name or description that mark it as arithmetic to do, over the task's numbers.
ARITHMETIC_WORDS = frozenset({"arithmetic", "expression", "formula", "calculation", "equation"})
_WORD = re.compile(r"[\w@+]+(?:[-.'/:@&][\w@+]+)*")  # alice@example.com, 3.5, thank-you and don't stay one word
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?![\w])")
# An argument described as one of these kinds takes only the phrases of that kind, when the task has any:
# "to: the recipient's email address" gets alice@example.com, not "report".
_KINDS = ((re.compile(r"\b(e-?mail|mail address)"), re.compile(r"[^@\s]+@[^@\s]+\.\w+")),
          (re.compile(r"\b(url|link|website|web address)"), re.compile(r"(https?://|www\.)\S+")))
_OPERATORS = r"\*\*|//|[-+*/%^]"
_LISTED_OPERATOR = re.compile(rf"(?<!\S)({_OPERATORS})(?=[\s,.;]|$)")  # "+ - * / // % **" in a description
_OPERATOR_BETWEEN_NUMBERS = re.compile(rf"(?<=[\d)])\s*({_OPERATORS})\s*(?=[\d(])")  # "23*19", "(3 + 4) * 5"
# A quoted passage: the quote opens after a space, a colon or the start and closes before a space, punctuation or
# the end, so that "What's the time in Rome? I'm late" quotes nothing.
_QUOTED = re.compile(r"""(?:(?<=[\s:(])|^)(?:'([^'\n]{2,400}?)'|"([^"\n]{2,400}?)"|"""
                     r"\u2018([^\u2019\n]{2,400}?)\u2019|\u201c([^\u201d\n]{2,400}?)\u201d)(?=[\s.,;:!?)]|$)")
MAX_TEXT_CHARS = 4000  # of the task and turns read for spans: a pasted document is not a list of choices


@dataclass
class Routing:
    """Settings; the defaults are what bench/agents_routing.py (the tool) and bench/agents.py (whole runs) measured
    on the embedded SmolLM2.

    weight, temperature: the router's prior, `weight * log_softmax(score / temperature)`, added to the model's
    log-probabilities (weight 0: the model alone). For the choice only weight / temperature counts (the
    softmax's normaliser is the same for every candidate): 40 means a score 0.1 higher is worth 4 nats of the
    model's. lexical: how much the words a task shares with a tool's text add to its cosine (`lexical_scores`),
    per unit of their rarity among the tools (0: cosine alone). top_k: only the router's best k tools are
    candidates (None: all); final_answer always is. answer_cosine: the score final_answer gets in the router,
    i.e. how close a tool must be to the task to beat answering (None: final_answer's description is embedded
    as a tool's is). min_cosine: the self-check; a chosen tool whose router score is below it is not called,
    the agent answers instead (None: off). scored_values: an argument with at most this many values to choose
    from (an enum, a Literal, one from the input) gets the value the model scores best (`score_arguments`, over
    the `beam` likeliest calls so far), not a greedy decoding's (0: all decoded). call_once: a tool the run has
    called is no candidate after its result (False: it may be called again, as a bigger model may need).
    follow_margin: after a result, final_answer's router score is the best called tool's less this, so that another
    tool is called only when the task points at it nearly as much (a second tool of the same kind, search_documents
    after search_web, followed 25 of 55 extended tasks' first calls; None: answer_cosine as before).
    answer_with_results: once the run has results, the final answer is one of them (False: the model writes it,
    as a bigger model may word it better). embedder: a rag Embedder (None: the embedded MiniLM, loaded on first
    use).
    """

    weight: float = 2.0
    temperature: float = 0.05
    lexical: float = 0.1
    top_k: int | None = 3
    answer_cosine: float | None = 0.2
    min_cosine: float | None = 0.2
    from_input: bool = True
    infer_from_input: bool = True
    max_span_words: int = 5
    max_spans: int = 300
    scored_values: int = 24
    beam: int = 3
    call_once: bool = True
    follow_margin: float | None = 0.1
    answer_with_results: bool = True
    embedder: Any = None

    def __post_init__(self):
        if self.temperature <= 0 or min(self.weight, self.lexical, self.scored_values) < 0 or self.beam < 1 or (
                self.top_k is not None and self.top_k < 1):
            raise ValueError(f"routing needs temperature > 0, weight >= 0 and top_k >= 1, got {self}")


@dataclass
class Route:
    """One step's choice: the tool, the schema its call is decoded under, and the scores behind it."""

    tool: str
    schema: dict
    record: dict  # {"scores": {name: {"model", "router", "total"}}, "chosen": name, "self_check": bool, "arguments"}
    call: str | None = None  # the whole call, when scoring chose every argument: nothing is left to decode


def resolve(setting: Any, model: Any) -> Routing | None:
    """An Agent's `routing=`: a Routing, True (the defaults), None/False (off), or "auto": on for an in-process
    core.LLM (the embedded model, or one loaded by path), off for any other (a server's model calls tools as it
    was trained to)."""
    if setting == "auto":
        return Routing() if model is None or is_local(model) else None
    if setting is True:
        return Routing()
    if setting is None or setting is False or isinstance(setting, Routing):
        return setting or None
    raise ValueError(f"routing must be a Routing, True, False, None or 'auto', got {setting!r}")


def is_local(model: Any) -> bool:
    """Whether `model` is a core.LLM (checked without importing torch: if core.llm is not loaded, it is not one)."""
    llm = sys.modules.get("core.llm")
    return llm is not None and isinstance(model, llm.LLM)


def route(model, prompt: list[dict], task: str, texts: list[str], tools: list[Tool], settings: Routing,
          max_string_length: int, called: frozenset[str] = frozenset(), results: list[str] = ()) -> Route:
    """Choose the step's tool (see the module docstring) and the schema of its call.

    `called`: the tools this run has called without an error, no candidates now (`Routing.call_once`): given a
    tool's result, the 135M model called a tool again in every second step of bench.agents' extended set (the same
    call in 32 of 47), never answering. `results`: those calls' results, newest first: once there are some, the
    final answer is one of them, chosen by the model's scores (`Routing.answer_with_results`), not written by it (a
    small model restates a result wrongly, or copies an error).
    """
    fillable = [t for t in tools if can_fill(t, [task, *texts], settings)] if settings.from_input else tools
    pool = fillable or tools
    tools = [t for t in pool if not (settings.call_once and t.name in called)]
    names = [t.name for t in tools]
    asked = bool(tools) and (settings.weight > 0 or settings.min_cosine is not None)
    cosines = router_cosines(task, pool, settings) if asked else {}  # over the pool: the called tools' too
    lexical = lexical_scores(task, pool) if asked and settings.lexical > 0 else {}
    relevance = relevances(cosines, lexical, settings)
    answer_bar = None
    if settings.follow_margin is not None and (done := [name for name in called if name in relevance]):
        answer_bar = max(settings.answer_cosine or 0.0, max(relevance[name] for name in done) - settings.follow_margin)
    cosines = {name: cosine for name, cosine in cosines.items() if name in names or name == FINAL_ANSWER}
    lexical = {name: value for name, value in lexical.items() if name in names}
    candidates = names
    if cosines and settings.top_k is not None:
        candidates = sorted(names, key=lambda name: -relevance[name])[:settings.top_k]
    candidates = [*candidates, FINAL_ANSWER]
    model_scores = _model_scores(model, prompt, candidates) if len(candidates) > 1 else {FINAL_ANSWER: 0.0}
    chosen, scores, self_check = choose(model_scores, cosines, lexical, settings, answer_bar)
    record = {"scores": scores, "chosen": chosen, "self_check": self_check}
    if chosen == FINAL_ANSWER:
        answers = list(dict.fromkeys(results)) if settings.answer_with_results else []
        return answer_route(model, prompt, answers, record, max_string_length)
    tool_ = next(t for t in tools if t.name == chosen)
    if settings.from_input:
        tool_ = dataclasses.replace(tool_, parameters=spans_schema(tool_, [task, *texts], settings))
    call = None
    if settings.scored_values > 1 and hasattr(model, "score"):
        parameters, record["arguments"] = score_arguments(model, prompt, tool_, settings.scored_values, settings.beam)
        tool_ = dataclasses.replace(tool_, parameters=parameters)
        properties = parameters.get("properties", {})
        if all(len(schema.get("enum", ())) == 1 for schema in properties.values()):
            arguments = {name: schema["enum"][0] for name, schema in properties.items()}
            call = json.dumps({"tool": chosen, "arguments": arguments}, ensure_ascii=False)
    return Route(chosen, {"anyOf": step_schema([tool_], max_string_length)["anyOf"][:1]}, record, call)


def answer_route(model, prompt: list[dict], results: list[str], record: dict, max_string_length: int) -> Route:
    """The final answer: written freely when the run has no results yet, else the result the model scores best
    (the newest when it cannot score them, or they do not fit its context), written whole with nothing to decode."""
    schema = step_schema([], max_string_length)
    if not results:
        return Route(FINAL_ANSWER, schema, record)
    calls = [json.dumps({"tool": FINAL_ANSWER, "arguments": {"answer": result}}, ensure_ascii=False)
             for result in results]
    logps = [0.0] * len(calls)
    if len(calls) > 1 and hasattr(model, "score"):
        with contextlib.suppress(ContextLengthError):  # long results after a long prompt: the newest, unscored
            logps = model.score(prompt, calls)
    best = max(range(len(calls)), key=lambda i: (logps[i], -i))
    record["arguments"] = {"answer": {json.dumps(r, ensure_ascii=False): round(lp, 4)
                                      for r, lp in zip(results, logps, strict=True)}}
    return Route(FINAL_ANSWER, schema, record, calls[best])


def can_fill(tool_: Tool, texts: list[str], settings: Routing) -> bool:
    """Whether `texts` have a value for each required argument of `tool_` that must be a number of theirs (a number
    from the input, an arithmetic one): a tool to convert an amount is no answer to a task that gives none."""
    required = set(tool_.parameters.get("required", ()))
    properties = tool_.parameters.get("properties", {})
    numeric = [name for name in from_input_parameters(tool_, settings.infer_from_input)
               if properties[name].get("type") in ("integer", "number")]
    needed = [*numeric, *arithmetic_parameters(tool_, settings.infer_from_input)]
    return all(numbers(texts, integers=properties[name].get("type") == "integer") for name in needed
               if name in required)


def relevances(cosines: dict[str, float], lexical: dict[str, float], settings: Routing,
               answer_bar: float | None = None) -> dict[str, float]:
    """The router's score per candidate: its cosine plus `settings.lexical` times its lexical score; final_answer's
    is `answer_bar` when given, else `answer_cosine` when that is set."""
    result = {name: cosine + settings.lexical * lexical.get(name, 0.0) for name, cosine in cosines.items()}
    if cosines and (answer_bar is not None or settings.answer_cosine is not None):
        result[FINAL_ANSWER] = answer_bar if answer_bar is not None else settings.answer_cosine
    return result


def choose(model_scores: dict[str, float], cosines: dict[str, float], lexical: dict[str, float],
           settings: Routing, answer_bar: float | None = None) -> tuple[str, dict[str, dict], bool]:
    """The candidate (of `model_scores`) with the best total, each candidate's scores, and whether the self-check
    overruled the choice (the chosen tool's relevance under `min_cosine`: the agent answers instead)."""
    relevance = relevances(cosines, lexical, settings, answer_bar) if cosines else {}
    scores = combine(model_scores, {name: relevance[name] for name in model_scores} if relevance else {}, settings)
    chosen = max(model_scores, key=lambda name: scores[name]["total"])
    self_check = (settings.min_cosine is not None and chosen != FINAL_ANSWER and bool(relevance)
                  and relevance[chosen] < settings.min_cosine)
    return (FINAL_ANSWER if self_check else chosen), scores, self_check


def combine(model_scores: dict[str, float], cosines: dict[str, float], settings: Routing) -> dict[str, dict]:
    """Per candidate: the model's log-probability, the router's score (`relevances`) and the total (the model's
    plus the prior)."""
    names = list(model_scores)
    prior = dict.fromkeys(names, 0.0)
    if cosines:
        logits = [cosines[name] / settings.temperature for name in names]
        top = max(logits)
        norm = top + math.log(sum(math.exp(x - top) for x in logits))
        prior = {name: settings.weight * (x - norm) for name, x in zip(names, logits, strict=True)}
    return {name: {"model": round(model_scores[name], 4), "router": round(cosines[name], 4) if cosines else None,
                   "total": round(model_scores[name] + prior[name], 4)} for name in names}


def _model_scores(model, prompt: list[dict], candidates: list[str]) -> dict[str, float]:
    """Log-probabilities of `{"tool": "<name>"` per candidate; a model that cannot score picks one by `choices`
    (0 for it, -inf for the rest)."""
    starts = [f'{{"tool": "{name}"' for name in candidates]
    if hasattr(model, "score"):
        return dict(zip(candidates, model.score(prompt, starts), strict=True))
    picked = "".join(model.stream(prompt, choices=starts, max_new_tokens=32, temperature=0.0))
    return {name: 0.0 if start == picked else -math.inf for name, start in zip(candidates, starts, strict=True)}


# --- the router -------------------------------------------------------------------------------------------------------

_EMBEDDER: dict[str, Any] = {}
_VECTORS: dict[tuple[int, str], Any] = {}  # (id of embedder, tool text) -> unit vector; tools are embedded once
_LOCK = threading.Lock()
MAX_CACHED_VECTORS = 4096


def embedded_embedder():
    """The embedded MiniLM (rag.SentenceTransformerEmbedder), loaded on first use and shared."""
    with _LOCK:
        if "embedder" not in _EMBEDDER:
            from rag.embeddings import SentenceTransformerEmbedder

            _EMBEDDER["embedder"] = SentenceTransformerEmbedder()
        return _EMBEDDER["embedder"]


def tool_text(tool_: Tool, arguments: bool = True) -> str:
    """A tool's words: its name in words, description, argument descriptions (unless not `arguments`) and examples.

    The router embeds it without the argument descriptions: with them, tools that take the same kind of argument
    ("city: the name of the city") embed alike, and on bench.agents_routing's tasks the tool chosen right fell from
    91% to 84% (extended set; original 94% to 88%). The lexical scores read all of it."""
    words = [tool_.name.replace("_", " ").replace("-", " "), tool_.description]
    for name, schema in tool_.parameters.get("properties", {}).items() if arguments else ():
        words.append(f"{name.replace('_', ' ')}: {schema.get('description', '')}".strip())
    for example in getattr(tool_, "examples", ()):
        words.append(" ".join(str(value) for value in example.values()))
    return ". ".join(word for word in words if word)


def router_cosines(task: str, tools: list[Tool], settings: Routing) -> dict[str, float]:
    """The task's cosine to each tool's text, and final_answer's (its description's, or `answer_cosine`)."""
    embedder = settings.embedder or embedded_embedder()
    texts = [tool_text(t, arguments=False) for t in tools]
    if settings.answer_cosine is None:
        texts.append(f"final answer. {FINAL_ANSWER_DESCRIPTION}")
    with _LOCK:
        missing = [text for text in dict.fromkeys(texts) if (id(embedder), text) not in _VECTORS]
    if missing:
        vectors = embedder.embed(missing)
        with _LOCK:
            if len(_VECTORS) + len(missing) > MAX_CACHED_VECTORS:
                _VECTORS.clear()
            _VECTORS.update({(id(embedder), text): vector for text, vector in zip(missing, vectors, strict=True)})
    query = embedder.embed([task[:MAX_TEXT_CHARS]])[0]
    with _LOCK:
        cosines = [float(_VECTORS[(id(embedder), text)] @ query) for text in texts]
    names = [t.name for t in tools] + ([FINAL_ANSWER] if settings.answer_cosine is None else [])
    result = dict(zip(names, cosines, strict=True))
    if settings.answer_cosine is not None:
        result[FINAL_ANSWER] = settings.answer_cosine
    return result


def lexical_scores(task: str, tools: list[Tool]) -> dict[str, float]:
    """Per tool: the words of the task found in the tool's text (`tool_text`), each weighted by its rarity among
    the tools, `log(1 + tools / tools whose text has it)`, summed.

    What MiniLM's cosine blurs: two search tools, two conversion tools, differ in a word or two ("internet",
    "documents", "currency", "unit"), which a task often says outright. Words are compared lower-cased, stop
    words dropped, plural and -ing/-ed endings cut; a word matches one it abbreviates ("docs", "documents") or
    one a typo away from it ("wheather", "weather"; see `_close`). An operator between two numbers of the
    task ("23*19") is a word too, matching one a tool's text lists on its own ("+ - * /").
    """
    vocabularies = [_lexical_terms(tool_text(t), _LISTED_OPERATOR) for t in tools]
    found = {}
    for term in _lexical_terms(task[:MAX_TEXT_CHARS], _OPERATOR_BETWEEN_NUMBERS):
        matched = [any(_close(term, word) for word in vocabulary) for vocabulary in vocabularies]
        if any(matched):
            found[term] = matched
    scores = {}
    for tool_, index in zip(tools, range(len(tools)), strict=True):
        scores[tool_.name] = round(sum(math.log(1 + len(tools) / sum(matched))
                                       for matched in found.values() if matched[index]), 4)
    return scores


def _lexical_terms(text: str, operators: re.Pattern) -> set[str]:
    """The stems of `text`'s words that are not stop words, and the arithmetic operators `operators` finds."""
    from rag.words import STOPWORDS

    words = {_stem(word) for word in re.findall(r"[a-z]+", text.lower().replace("_", " "))
             if len(word) > 1 and word not in STOPWORDS}
    return words | set(operators.findall(text))


def _stem(word: str) -> str:
    for suffix, replacement in (("ies", "y"), ("ss", "ss"), ("s", ""), ("ing", ""), ("ed", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: len(word) - len(suffix)] + replacement
    return word


def _close(term: str, word: str) -> bool:
    """Whether a task's `term` matches a tool's `word`: the same, an abbreviation of it ("doc", "conver"; 3 letters
    or more), a longer form of it ("reminders" of "remind"; the word of 4 letters or more, so that "expense" is not
    "exp"), or a typo away from it (one letter added, dropped, changed, or two swapped; 4 letters or more, the first
    letter the same: a typo seldom hits it)."""
    if term == word or (len(term) >= 3 and word.startswith(term)) or (len(word) >= 4 and term.startswith(word)):
        return True
    short, long = sorted((term, word), key=len)
    if len(short) < 4 or len(long) - len(short) > 1 or term[0] != word[0]:
        return False
    if len(short) == len(long):
        differ = [i for i in range(len(term)) if term[i] != word[i]]
        return len(differ) == 1 or (len(differ) == 2 and differ[1] == differ[0] + 1
                                    and term[differ[0]] == word[differ[1]] and term[differ[1]] == word[differ[0]])
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))


# --- arguments from the input ----------------------------------------------------------------------------------

def from_input_parameters(tool_: Tool, infer: bool) -> list[str]:
    """The parameters of `tool_` whose values are taken from the input (see the module docstring)."""
    marked = _markers(tool_)
    chosen = []
    for name, schema in tool_.parameters.get("properties", {}).items():
        if marked.get(name) is FromInput or (infer and name not in marked and _short_value(name, schema)):
            chosen.append(name)
    return chosen


def _markers(tool_: Tool) -> dict[str, type]:
    """The parameters of `tool_` annotated FromInput, FreeText or Arithmetic, with their marker."""
    marked: dict[str, type] = {}
    try:
        hints = typing.get_type_hints(tool_.function, include_extras=True)
    except Exception:  # a Tool built by hand around a function without resolvable hints: no markers
        hints = {}
    for name, hint in hints.items():
        for marker in getattr(hint, "__metadata__", ()):
            if marker in (FromInput, FreeText, Arithmetic):
                marked[name] = marker
    return marked


def _plain(schema: dict) -> bool:
    """Whether `schema` has no enum, const, pattern, format or alternatives of its own to keep."""
    return not any(key in schema for key in ("enum", "const", "pattern", "format", "anyOf"))


def _short_value(name: str, schema: dict) -> bool:
    """A plain string or number (no enum, const, pattern or format of its own) not described as free text."""
    if schema.get("type") not in ("string", "integer", "number") or not _plain(schema):
        return False
    named = set(re.findall(r"[a-z]+", name.replace("_", " ").lower()))
    described = set(re.findall(r"[a-z]+", schema.get("description", "").lower()))
    return not (named & FREE_TEXT_NAMES or described & FREE_TEXT_WORDS)


def spans(texts: list[str], max_words: int, limit: int) -> list[str]:
    """The phrases of `texts`: what each quotes ('...', "...", of any length), then runs of 1 to `max_words` words as
    written (the characters between them kept), none starting or ending with a stop word; each once, at most
    `limit`: a text's before the next text's, shorter runs first within each."""
    from rag.words import STOPWORDS  # here, not at the top: `import agents` stays free of bm25s

    found: dict[str, None] = {}
    for text in texts:
        for match in _QUOTED.finditer(text[:MAX_TEXT_CHARS]):
            if len(found) >= limit:
                return list(found)
            found.setdefault(next(group for group in match.groups() if group is not None).strip(), None)
        words = list(_WORD.finditer(text[:MAX_TEXT_CHARS]))
        for length in range(1, max_words + 1):
            for start in range(len(words) - length + 1):
                first, last = words[start], words[start + length - 1]
                if first.group().lower() in STOPWORDS or last.group().lower() in STOPWORDS:
                    continue
                if len(found) >= limit:
                    return list(found)
                found.setdefault(text[first.start():last.end()], None)
    return list(found)


def numbers(texts: list[str], integers: bool) -> list[int | float]:
    """The numbers written in `texts`, each once ("1,234" is 1234); only whole ones when `integers`."""
    found: dict[float, None] = {}
    for text in texts:
        for match in _NUMBER.finditer(text[:MAX_TEXT_CHARS]):
            value = float(match.group().replace(",", ""))
            if value.is_integer():
                value = int(value)
            elif integers:
                continue
            found.setdefault(value, None)
    return list(found)


def of_kind(phrases: list[str], described: str) -> list[str]:
    """The phrases that are an email address (a URL) when `described` says the argument is one and there are
    such phrases; else all of them."""
    for says, looks in _KINDS:
        if says.search(described.lower()):
            matching = [phrase for phrase in phrases if looks.fullmatch(phrase)]
            return matching or phrases
    return phrases


def spans_schema(tool_: Tool, texts: list[str], settings: Routing) -> dict:
    """`tool_.parameters` with each from-input parameter an `enum` of the phrases or numbers of `texts`, each
    arithmetic one an `enum` of `expressions` over those numbers, and each enum of strings held to the values the
    task (`texts[0]`) names, when it names any ("in fahrenheit": not the default celsius)."""
    names = from_input_parameters(tool_, settings.infer_from_input)
    arithmetic = arithmetic_parameters(tool_, settings.infer_from_input)
    properties = dict(tool_.parameters.get("properties", {}))
    phrases = None
    for name, schema in properties.items():
        if name in names:
            kind = schema.get("type")
            if kind == "string":
                if phrases is None:
                    phrases = not_naming(tool_, spans(texts, settings.max_span_words, settings.max_spans))
                values: list = of_kind(phrases, f"{name} {schema.get('description', '')}")
            else:
                values = numbers(texts, integers=kind == "integer")
        elif name in arithmetic:
            values = expressions(texts)
        elif name in passage_parameters(tool_, settings.infer_from_input):
            values = passages(texts[0])
        elif isinstance(schema.get("enum"), list) and all(isinstance(v, str) for v in schema["enum"]):
            values = [v for v in schema["enum"] if re.search(rf"(?<!\w){re.escape(v)}(?!\w)", texts[0][:MAX_TEXT_CHARS],
                                                             re.IGNORECASE)]
        else:
            continue
        if values:
            properties[name] = {**schema, "enum": values}
    return {**tool_.parameters, "properties": properties} if properties else tool_.parameters


def passage_parameters(tool_: Tool, infer: bool) -> list[str]:
    """The unmarked string parameters of `tool_` named `text` (with `infer`): "the text to translate", "the text whose
    words to count", "what to remind the user of" name a text the user gives, not one to write."""
    marked = _markers(tool_)
    return [name for name, schema in tool_.parameters.get("properties", {}).items()
            if infer and name == "text" and name not in marked and schema.get("type") == "string"
            and _plain(schema)]


_COLON_TAIL = re.compile(r"(?<=\S):\s+(\S.*)$", re.DOTALL)  # "count the words in: small models choose"


def passages(text: str) -> list[str]:
    """The passages `text` gives as text to work on: what it quotes, and what follows its last colon ("reminder: buy
    milk") unless that quotes, without an ending question mark; none when it gives neither (the parameter stays
    free)."""
    text = text[:MAX_TEXT_CHARS]
    found = [next(group for group in match.groups() if group is not None).strip() for match in _QUOTED.finditer(text)]
    if (tail := _COLON_TAIL.search(text.rsplit("\n", 1)[-1])) and not _QUOTED.search(tail.group(1)):
        found.append(tail.group(1).strip().rstrip("?").strip())
    return [passage for passage in dict.fromkeys(found) if passage]


def not_naming(tool_: Tool, phrases: list[str]) -> list[str]:
    """The phrases that say more than the tool's own words ("web" of search_web, "weather" of get_weather): those
    are how a task names the tool, not what to call it with. All of them when every phrase would go."""
    vocabulary = _lexical_terms(tool_text(tool_), _LISTED_OPERATOR)
    kept = []
    for phrase in phrases:
        terms = _lexical_terms(phrase, _OPERATOR_BETWEEN_NUMBERS)
        if not terms or not all(any(_close(term, word) for word in vocabulary) for term in terms):
            kept.append(phrase)
    return kept or phrases


def arithmetic_parameters(tool_: Tool, infer: bool) -> list[str]:
    """The string parameters of `tool_` that are arithmetic: marked `Arithmetic`, or, with `infer`, not marked
    otherwise and named or described as an expression, a formula, arithmetic."""
    marked = _markers(tool_)
    chosen = []
    for name, schema in tool_.parameters.get("properties", {}).items():
        words = set(re.findall(r"[a-z]+", f"{name.replace('_', ' ')} {schema.get('description', '')}".lower()))
        inferred = infer and name not in marked and schema.get("type") == "string" and "enum" not in schema \
            and bool(words & ARITHMETIC_WORDS)
        if marked.get(name) is Arithmetic or inferred:
            chosen.append(name)
    return chosen


_ARITHMETIC_SPAN = re.compile(r"[(\d][\d\s.,+\-*/%()^]*[\d)]")


# Words that name an operation ("250 divided by 8"), matched as `_close` does (typos too), and the operator each means.
OPERATOR_WORDS = {"plus": "+", "add": "+", "added": "+", "sum": "+", "total": "+", "minus": "-", "subtract": "-",
                  "less": "-", "difference": "-", "times": "*", "multiply": "*", "multiplied": "*", "product": "*",
                  "divide": "/", "divided": "/", "split": "/", "each": "/", "per": "/", "average": "/",
                  "power": "**", "squared": "**", "cubed": "**", "root": "sqrt"}


def expressions(texts: list[str], operands: int = 3) -> list[str]:
    """Arithmetic over the numbers of `texts`. What the first text writes out as arithmetic ("(3 + 4) * 5",
    "23*19"), when it writes any: the user wrote the expression. Else each of + - * / ** on two of its first
    `operands` numbers (either order for - / **; a power only up to 64), and the square root of each, held to the
    operations the text names when it names some (`OPERATOR_WORDS`: "divided", "power", "root"; the 135M model
    scores "2 * 10" over "2 ** 10" for "2 to the power of 10"). A number written with "%" is taken as its hundredth
    ("15%": 15 / 100), and then only expressions with it are offered ("15% of 80": a product). Each expression
    once."""
    text = texts[0][:MAX_TEXT_CHARS] if texts else ""
    written = [re.sub(r"\s+", " ", match.group().replace("^", "**")) for match in _ARITHMETIC_SPAN.finditer(text)]
    written = [w for w in dict.fromkeys(written) if _OPERATOR_BETWEEN_NUMBERS.search(w) and _parses(w)]
    if written:
        return written
    values = [_number_text(n) for n in numbers(texts[:1], integers=False)[:operands]]
    percents = [f"{_number_text(float(p))} / 100" for p in re.findall(r"(?<![\w.])(\d+(?:\.\d+)?)\s*%", text)]
    values += percents
    words = set(re.findall(r"[a-z]+", text.lower()))
    named = {operator for word, operator in OPERATOR_WORDS.items() if any(_close(w, word) for w in words if len(w) > 2)}
    if percents and "of" in words:  # "15% of 80"
        named.add("*")
    found: dict[str, str] = {}  # expression: its operator
    pairs = [(a, b) for i, a in enumerate(values) for b in values[i + 1:] if f"{a} / 100" != b]
    for a, b in pairs:
        for left, right in ((a, b), (b, a)):
            for operator in ("+", "*", "-", "/", "**"):
                if (operator in "+*" and (left, right) == (b, a)) or (operator == "**" and not _small_power(right)):
                    continue
                left_text = f"({left})" if " " in left else left
                right_text = f"({right})" if " " in right else right
                found.setdefault(f"{left_text} {operator} {right_text}", operator)
    for value in values:
        found.setdefault(f"sqrt({value})", "sqrt")
    offered = list(found)
    if percents:
        offered = [e for e in offered if any(p in e for p in percents)] or offered
    return [e for e in offered if found[e] in named] or offered


def _small_power(exponent: str) -> bool:
    """An exponent worth offering: a number up to 64 (a larger power is seldom asked, and soon too big to print)."""
    try:
        return abs(float(exponent)) <= 64
    except ValueError:
        return False


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _parses(text: str) -> bool:
    try:
        ast.parse(text, mode="eval")
    except SyntaxError:
        return False
    return True


def score_arguments(model, prompt: list[dict], tool_: Tool, limit: int, beam: int = 3) -> tuple[dict, dict]:
    """`tool_.parameters` with its leading arguments that have at most `limit` values to choose from (an `enum`)
    held to the values the model scores best together, and the scores (value: log-probability of the call up to
    it) per argument scored, as the best call so far saw them.

    Each value is scored in the call as written so far (`core.LLM.score`), followed by what closes it, so that a
    value the model would go on from ("the Tour" of "the Tour de France") loses to one it would end; a greedy
    decoding instead takes the likeliest first token and is held to the values that start with it. The `beam`
    likeliest calls so far are carried on to the next argument, and the likeliest whole call wins: taking each
    argument's best alone, the 135M model gives "from" the currency named last ("GBP in JPY": from JPY), and then
    has to give "to" the other one; scored together, from GBP to JPY is likelier. A string another argument took
    is not offered again ("translate spanish into spanish"). Scoring stops at the first argument without such an
    enum; the decoder writes the rest.
    """
    properties = dict(tool_.parameters.get("properties", {}))
    beams = [(0.0, f'{{"tool": {json.dumps(tool_.name)}, "arguments": {{', ())]  # log-probability, text, values
    scores: dict[str, dict] = {}
    names, scored = list(properties), []
    for index, name in enumerate(names):
        values = properties[name].get("enum")
        if not isinstance(values, list) or not values or len(values) > limit:
            break
        field = f"{', ' if index else ''}{json.dumps(name)}: "
        closer = ", " if index + 1 < len(names) else "}}"
        extended = []
        for rank, (logp, written, chosen) in enumerate(beams):
            offered = [v for v in values if not (isinstance(v, str) and v in chosen)] or values
            texts = [json.dumps(v, ensure_ascii=False) for v in offered]
            if len(values) == 1:
                extended.append((logp, written + field + texts[0], (*chosen, offered[0])))
                continue
            # One batch per beam: its call so far is a prefix every row shares, run once (one batch for all beams
            # shares less, so each row runs more tokens: 2x slower on the extended set's conversions).
            logps = model.score(prompt, [written + field + text + closer for text in texts])
            if rank == 0:
                scores[name] = {text: round(lp, 4) for text, lp in zip(texts, logps, strict=True)}
            extended += [(lp, written + field + text, (*chosen, v))
                         for v, text, lp in zip(offered, texts, logps, strict=True)]
        beams = sorted(extended, key=lambda b: -b[0])[:max(beam, 1)]
        scored.append(name)
    for name, value in zip(scored, beams[0][2], strict=True):
        properties[name] = {**properties[name], "enum": [value]}
    return {**tool_.parameters, "properties": properties}, scores
