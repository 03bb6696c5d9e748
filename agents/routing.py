"""Routing: a small model's step as two decisions, which tool (scored), then its arguments (spans of the task).

One constrained decoding over every tool's schema lets a 135M model mix the decisions up: the
calculator for a weather question, the docstring's example city for a currency one. With routing,
each step of an `Agent(routing=Routing(...))`:

1. scores every candidate, the tools and `final_answer`, by the model's log-probability of the reply
   starting `{"tool": "<name>"` (`core.LLM.score`: one forward over the prompt, whose prefix is cached,
   and one batch over the candidates). At a run's first decision the router adds its prior: the cosine
   of the task to each tool's text (name, description, argument descriptions, examples) under the
   embedded MiniLM, as `weight * log_softmax(cosine / temperature)`; final_answer gets a fixed cosine,
   the bar a tool must clear. Self-check: a chosen tool whose cosine is under `min_cosine` is not called,
   the agent answers. A model without `score` (a remote one) picks by constrained `choices` among the
   router's best `top_k` instead. On the task set of agents.evaluate the router alone picks better than
   the model alone (81% against 47%), and the two together best (91%; bench/agents_routing.py).
2. decodes the chosen tool's call alone, under its schema, where every argument "from the input" is an
   `enum` of what the task, the user's earlier turns and the tools' results so far say (in that order of
   preference, up to `max_spans`; a file name a search found can be read next): their phrases (runs of up
   to `max_span_words` words, never starting or ending with a stop word) for a string, only the email
   addresses (URLs) for one described as an email address (a URL), the numbers written there for a
   number. A parameter is from the input when annotated `Annotated[str, FromInput]`, or, with
   `infer_from_input`, when it is a plain string or number whose name and description do not say it is
   free text (a body, an expression, ...); `Annotated[str, FreeText]` keeps one free. One with nothing
   to choose from (no number in the task) stays free.

The step records the scores (`Step.routing`), so a trace shows why a tool was chosen.

Does not: score arguments (they are decoded, greedy), or route later steps with the router (after a
tool's result the model's own scores decide: the task's words still point at the tool just used).
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import threading
import typing
from dataclasses import dataclass
from typing import Any

from agents.steps import FINAL_ANSWER_DESCRIPTION, step_schema
from agents.tools import FINAL_ANSWER, Tool


class FromInput:
    """`Annotated[str, FromInput]`: the argument is a phrase (or a number) of the user's own words."""


class FreeText:
    """`Annotated[str, FreeText]`: the argument is written freely, never inferred to be from the input."""


# Words in a parameter's name or description that mark it as text to write, not to copy from the task.
FREE_TEXT_WORDS = frozenset({"body", "text", "content", "message", "expression", "description", "summary",
                             "prompt", "answer", "reply", "note", "comment", "instructions", "formula", "sql",
                             "script", "json", "html", "markdown", "template", "arithmetic"})
FREE_TEXT_NAMES = FREE_TEXT_WORDS | {"code", "source", "program"}  # in a name only: "the currency code" is short
_WORD = re.compile(r"[\w@+]+(?:[-.'/:@&][\w@+]+)*")  # alice@example.com, 3.5, thank-you and don't stay one word
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?![\w])")
# An argument described as one of these kinds takes only the phrases of that kind, when the task has any:
# "to: the recipient's email address" gets alice@example.com, not "report".
_KINDS = ((re.compile(r"\b(e-?mail|mail address)"), re.compile(r"[^@\s]+@[^@\s]+\.\w+")),
          (re.compile(r"\b(url|link|website|web address)"), re.compile(r"(https?://|www\.)\S+")))
MAX_TEXT_CHARS = 4000  # of the task and turns read for spans: a pasted document is not a list of choices


@dataclass
class Routing:
    """Settings; the defaults are what bench/agents_routing.py measured on the embedded SmolLM2.

    weight, temperature: the router's prior, `weight * log_softmax(cosine / temperature)`, added to the
    model's log-probabilities (weight 0: the model alone). For the choice only weight / temperature counts
    (the softmax's normaliser is the same for every candidate): 40 means a cosine 0.1 higher is worth 4
    nats of the model's. answer_cosine: the cosine final_answer gets in the router, i.e. how close a tool
    must be to the task to beat answering (None: final_answer's description is embedded as a tool's is).
    min_cosine: the self-check; a chosen tool whose cosine is below it is not called, the agent answers
    instead (None: off). top_k: only the router's best k tools are candidates (None: all); final_answer
    always is. embedder: a rag Embedder (None: the embedded MiniLM, loaded on first use).
    """

    weight: float = 2.0
    temperature: float = 0.05
    top_k: int | None = None
    answer_cosine: float | None = 0.2
    min_cosine: float | None = 0.15
    from_input: bool = True
    infer_from_input: bool = True
    max_span_words: int = 5
    max_spans: int = 300
    embedder: Any = None

    def __post_init__(self):
        if self.temperature <= 0 or self.weight < 0 or (self.top_k is not None and self.top_k < 1):
            raise ValueError(f"routing needs temperature > 0, weight >= 0 and top_k >= 1, got {self}")


@dataclass
class Route:
    """One step's choice: the tool, the schema its call is decoded under, and the scores behind it."""

    tool: str
    schema: dict
    record: dict  # {"scores": {name: {"model", "router", "total"}}, "chosen": name, "self_check": bool}


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
          max_string_length: int, use_router: bool) -> Route:
    """Choose the step's tool (see the module docstring) and the schema of its call."""
    names = [t.name for t in tools]
    asked = use_router and (settings.weight > 0 or settings.min_cosine is not None)
    cosines = router_cosines(task, tools, settings) if asked else {}
    candidates = names
    if cosines and settings.top_k is not None:
        candidates = sorted(names, key=lambda name: -cosines[name])[:settings.top_k]
    candidates = [*candidates, FINAL_ANSWER]
    model_scores = _model_scores(model, prompt, candidates)
    scores = combine(model_scores, cosines, settings)
    chosen = max(candidates, key=lambda name: scores[name]["total"])
    self_check = (settings.min_cosine is not None and chosen != FINAL_ANSWER and bool(cosines)
                  and cosines[chosen] < settings.min_cosine)
    if self_check:
        chosen = FINAL_ANSWER
    record = {"scores": scores, "chosen": chosen, "self_check": self_check}
    if chosen == FINAL_ANSWER:
        return Route(chosen, step_schema([], max_string_length), record)
    tool_ = next(t for t in tools if t.name == chosen)
    if settings.from_input:
        tool_ = dataclasses.replace(tool_, parameters=spans_schema(tool_, [task, *texts], settings))
    return Route(chosen, {"anyOf": step_schema([tool_], max_string_length)["anyOf"][:1]}, record)


def combine(model_scores: dict[str, float], cosines: dict[str, float], settings: Routing) -> dict[str, dict]:
    """Per candidate: the model's log-probability, the router's cosine and the total (the model's plus the prior)."""
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


def tool_text(tool_: Tool) -> str:
    """What the router embeds for a tool: its name in words, description, argument descriptions and examples."""
    words = [tool_.name.replace("_", " ").replace("-", " "), tool_.description]
    for name, schema in tool_.parameters.get("properties", {}).items():
        words.append(f"{name.replace('_', ' ')}: {schema.get('description', '')}".strip())
    for example in getattr(tool_, "examples", ()):
        words.append(" ".join(str(value) for value in example.values()))
    return ". ".join(word for word in words if word)


def router_cosines(task: str, tools: list[Tool], settings: Routing) -> dict[str, float]:
    """The task's cosine to each tool's text, and final_answer's (its description's, or `answer_cosine`)."""
    embedder = settings.embedder or embedded_embedder()
    texts = [tool_text(t) for t in tools]
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


# --- arguments from the input ----------------------------------------------------------------------------------

def from_input_parameters(tool_: Tool, infer: bool) -> list[str]:
    """The parameters of `tool_` whose values are taken from the input (see the module docstring)."""
    marked: dict[str, type] = {}
    try:
        hints = typing.get_type_hints(tool_.function, include_extras=True)
    except Exception:  # a Tool built by hand around a function without resolvable hints: no markers
        hints = {}
    for name, hint in hints.items():
        for marker in getattr(hint, "__metadata__", ()):
            if marker in (FromInput, FreeText):
                marked[name] = marker
    chosen = []
    for name, schema in tool_.parameters.get("properties", {}).items():
        if marked.get(name) is FromInput or (infer and name not in marked and _short_value(name, schema)):
            chosen.append(name)
    return chosen


def _short_value(name: str, schema: dict) -> bool:
    """A plain string or number (no enum, const, pattern or format of its own) not described as free text."""
    if schema.get("type") not in ("string", "integer", "number") or any(
            key in schema for key in ("enum", "const", "pattern", "format", "anyOf")):
        return False
    named = set(re.findall(r"[a-z]+", name.replace("_", " ").lower()))
    described = set(re.findall(r"[a-z]+", schema.get("description", "").lower()))
    return not (named & FREE_TEXT_NAMES or described & FREE_TEXT_WORDS)


def spans(texts: list[str], max_words: int, limit: int) -> list[str]:
    """The phrases of `texts`: runs of 1 to `max_words` words as written (the characters between them kept), none
    starting or ending with a stop word, each once, at most `limit`: a text's before the next text's, shorter runs
    first within each."""
    from rag.words import STOPWORDS  # here, not at the top: `import agents` stays free of bm25s

    found: dict[str, None] = {}
    for text in texts:
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
    """`tool_.parameters` with each from-input parameter an `enum` of the phrases or numbers of `texts`."""
    names = from_input_parameters(tool_, settings.infer_from_input)
    if not names:
        return tool_.parameters
    properties = dict(tool_.parameters["properties"])
    phrases = None
    for name in names:
        kind = properties[name].get("type")
        if kind == "string":
            phrases = phrases if phrases is not None else spans(texts, settings.max_span_words, settings.max_spans)
            values: list = of_kind(phrases, f"{name} {properties[name].get('description', '')}")
        else:
            values = numbers(texts, integers=kind == "integer")
        if values:
            properties[name] = {**properties[name], "enum": values}
    return {**tool_.parameters, "properties": properties}
