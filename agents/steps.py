"""Steps: what the model must say at each step, the record of what each step did, and traces of whole runs.

Every step the model replies with one JSON object, `{"tool": <name>, "arguments": {...}}`, where the
pseudo-tool `final_answer` (arguments `{"answer": <text>}`) ends the run. `step_schema` is that
format as one JSON schema (anyOf one object per tool), which constrained decoding turns into a grammar:
the model cannot produce anything else. Every string gets a `maxLength`, every array a `maxItems` and
every integer a range, so a small model cannot ramble until the token limit cuts the JSON off (a float's
fraction is the exception: see `bounded`). `parse_call` still checks the text, for backends that do not
constrain.

A `Step` records one model call and what followed; a trace is a run as JSON lines: a "run" header
(task, instructions, tools, limits, the conversation before the task), one "step" record per step, a
"result" record, and after a pause a "resume" record with the person's decision, then the resumed
steps. `read_trace` reads one back; `agents.agent.replay` re-runs it.

Does not: store the tools' Python objects (a trace names them and keeps their schemas), or redact
anything (a trace holds every argument and observation, secrets included).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.tools import FINAL_ANSWER, Tool
from core.json_schema import map_schema

if TYPE_CHECKING:
    from agents.approvals import PausedRun

TRACE_FORMAT = "llmkit-agent-trace"
TRACE_VERSION = 1
MAX_ITEMS = 32  # per array, in what the model may generate
MAX_INTEGER = 10**15  # the bound of an integer that has none: at most 16 digits
MODEL_ERRORS = ("parse", "unknown_tool", "arguments")  # the output itself was not a valid step
ERROR_KINDS = (*MODEL_ERRORS, "tool", "timeout", "rejected", "repeated")
APPROVALS = ("pending", "approved", "edited", "rejected")
STATUSES = ("answered", "stopped", "paused")
# Timings; trimming counts the recorded model's tokens, routing scores are the recorded model's (a replay runs without)
_UNREPRODUCIBLE = ("model_seconds", "tool_seconds", "trimmed", "routing")


class StepParseError(ValueError):
    """The model's text is not a step: not JSON, not an object, or no tool name."""


@dataclass
class StepError:
    kind: str  # one of ERROR_KINDS
    message: str

    def __post_init__(self):
        assert self.kind in ERROR_KINDS, self.kind


@dataclass
class Step:
    """One model call and what came of it. `observation` is what the model is shown next (result or error)."""

    index: int  # 1-based, within the run
    output: str  # the model's text, exactly
    tool: str | None = None  # None when the output did not parse; FINAL_ANSWER for the answer
    arguments: dict | None = None  # as the model gave them (or as a person edited them)
    observation: str | None = None
    error: StepError | None = None
    answer: str | None = None
    approval: str | None = None  # None when the tool needs none, else one of APPROVALS
    proposed_arguments: dict | None = None  # the model's arguments, when a person edited them
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None  # the model's: "stop", or "length" when cut off
    model_seconds: float = 0.0
    tool_seconds: float = 0.0
    trimmed: dict | None = None  # what was dropped from the prompt to fit the context (agents.context.fit_context)
    routing: dict | None = None  # with routing on, the scores the tool was chosen by (agents.routing.Route.record)

    def __post_init__(self):
        assert self.approval is None or self.approval in APPROVALS, self.approval

    @property
    def valid(self) -> bool:
        """True when the output was a call of a known tool with valid arguments, or a final answer."""
        return self.error is None or self.error.kind not in MODEL_ERRORS

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> Step:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in record.items() if key in known}
        if values.get("error") is not None:
            values["error"] = StepError(**values["error"])
        return cls(**values)

    def replayable(self) -> dict:
        """Everything but the timings and the trimming: what a replay with the same outputs must reproduce exactly."""
        return {key: value for key, value in self.to_dict().items() if key not in _UNREPRODUCIBLE}


@dataclass
class RunResult:
    """How a run ended. status: "answered", "stopped" (a budget ran out: see stop_reason) or "paused"."""

    task: str
    status: str
    steps: list[Step]
    answer: str | None = None
    stop_reason: str | None = None
    paused: PausedRun | None = None  # set when status is "paused": resume it with Agent.resume
    seconds: float = 0.0  # the run's own time; a pause's wait for a person is not counted

    def __post_init__(self):
        assert self.status in STATUSES, self.status
        assert (self.paused is not None) == (self.status == "paused"), "a paused result carries its PausedRun"

    @property
    def prompt_tokens(self) -> int:
        return sum(step.prompt_tokens for step in self.steps)

    @property
    def completion_tokens(self) -> int:
        return sum(step.completion_tokens for step in self.steps)


# --- the step format ------------------------------------------------------------------------------------------------


def step_schema(tools: list[Tool], max_string_length: int) -> dict:
    """anyOf one `{"tool": const, "arguments": schema}` object per tool, then final_answer.

    Each branch carries its tool's description, so a backend with native tool calling can rebuild
    the tool list from this schema alone.
    """
    branches = [_branch(t.name, t.description, t.parameters, max_string_length) for t in tools]
    branches.append(_branch(FINAL_ANSWER, FINAL_ANSWER_DESCRIPTION, FINAL_ANSWER_PARAMETERS, max_string_length))
    return {"anyOf": branches}


FINAL_ANSWER_DESCRIPTION = "Give the final answer to the user and end the task."
FINAL_ANSWER_PARAMETERS = {"type": "object", "properties": {"answer": {"type": "string", "description": "the answer"}},
                           "required": ["answer"], "additionalProperties": False}


def _branch(name: str, description: str, parameters: dict, max_string_length: int) -> dict:
    return {"type": "object", "description": description,
            "properties": {"tool": {"const": name}, "arguments": bounded(parameters, max_string_length)},
            "required": ["tool", "arguments"], "additionalProperties": False}


def bounded(schema: dict, max_string_length: int) -> dict:
    """A copy where every free string has a maxLength, every array a maxItems and every integer a range.

    Bounds the schema already has are kept. The digits of a float's fraction cannot be bounded this
    way: only the step's token limit ends them.
    """
    def bound(node: dict) -> dict:
        kinds = node.get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if "string" in kinds and "enum" not in node and "const" not in node:
            node.setdefault("maxLength", max_string_length)
        if "array" in kinds:
            node.setdefault("maxItems", MAX_ITEMS)
        if "integer" in kinds:  # a range bounds the digits too; a float's fraction stays unbounded
            node.setdefault("minimum", -MAX_INTEGER)
            node.setdefault("maximum", MAX_INTEGER)
        return node

    return map_schema(schema, bound)


def system_prompt(instructions: str, tools: list[Tool]) -> str:
    """The instructions, the tools as a JSON list (final_answer first) and the reply format.

    A tool's examples (Tool.examples) follow its parameters as whole calls, under "examples": values a
    call might take, not defaults (a parameter's default is only ever its schema's).

    The JSON tool list inside <tools> tags is the shape SmolLM2-Instruct saw in its function-calling
    training data (Argilla's Synth-APIGen); on the task set of agents.evaluate it picks the right tool
    more often this way than from a prose list, and larger models read it as well.
    """
    listed = [(FINAL_ANSWER, FINAL_ANSWER_DESCRIPTION, FINAL_ANSWER_PARAMETERS, ()),
              *((t.name, t.description, t.parameters, t.examples) for t in tools)]
    specs = [{"name": name, "description": description, "parameters": _shown(parameters),
              **({"examples": [{"tool": name, "arguments": example} for example in examples]} if examples else {})}
             for name, description, parameters, examples in listed]
    return (f"{instructions.strip()}\n\n"
            "You are given a task and a set of tools. Call the tool that achieves the task, with argument values "
            "taken from the task; you will then see its result. When you have the result, or when no tool fits, "
            f"call {FINAL_ANSWER} with your answer.\n\n"
            f"You have access to the following tools:\n<tools>{json.dumps(specs, ensure_ascii=False)}</tools>\n\n"
            "Reply with exactly one JSON object in this format, and no other text:\n"
            '{"tool": "tool_name", "arguments": {"argument1": "value1", "argument2": "value2"}}')


def _shown(schema: dict) -> dict:
    """The schema without `additionalProperties: false`, which only costs prompt tokens: the grammar enforces it."""
    return map_schema(schema, lambda node: {key: value for key, value in node.items()
                                            if not (key == "additionalProperties" and value is False)})


def parse_call(text: str) -> tuple[str, Any]:
    """(tool name, arguments) from a model's reply; lenient with code fences and trailing text.

    Raises StepParseError with what was wrong, phrased for the model to read.
    """
    start = text.find("{")
    if start < 0:
        raise StepParseError('the reply is not a JSON object; reply {"tool": "<name>", "arguments": {...}}')
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as error:
        raise StepParseError(f"the reply is not valid JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(value, dict) or not isinstance(value.get("tool"), str):
        raise StepParseError('the reply must be an object with a "tool" name and an "arguments" object')
    return value["tool"], value.get("arguments", {})


# --- traces -----------------------------------------------------------------------------------------------------------


def append_record(path: str | Path, kind: str, record: dict) -> None:
    """One JSON line, flushed and closed at once: a crash keeps every step written before it."""
    line = json.dumps({"type": kind, **record}, ensure_ascii=False, default=str)
    with open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")


def run_header(task: str, instructions: str, model: str, tools: list[Tool], limits: dict,
               history: list[dict]) -> dict:
    return {"format": TRACE_FORMAT, "version": TRACE_VERSION, "time": datetime.now(UTC).isoformat(),
            "task": task, "instructions": instructions, "model": model, "limits": limits, "history": history,
            "tools": [{"name": t.name, "description": t.description, "parameters": t.parameters,
                       "side_effects": t.side_effects, "requires_approval": t.requires_approval} for t in tools]}


@dataclass
class Trace:
    """One run read back: a later record of a step (after a person's decision) replaces the earlier one."""

    header: dict
    steps: list[Step] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)  # in order, one per resume
    results: list[dict] = field(default_factory=list)  # one per segment: paused ones, then the last


def read_trace(path: str | Path) -> Trace:
    """The run recorded in `path`; ValueError when the file is not a trace of this version."""
    records = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not records or records[0].get("type") != "run" or records[0].get("format") != TRACE_FORMAT:
        raise ValueError(f"{path} is not an llmkit agent trace (its first line must be a 'run' record)")
    if records[0].get("version") != TRACE_VERSION:
        raise ValueError(f"{path} has trace version {records[0].get('version')!r}; this llmkit reads "
                         f"version {TRACE_VERSION}")
    if sum(record.get("type") == "run" for record in records) > 1:
        raise ValueError(f"{path} holds more than one run: write each run to its own trace file")
    trace = Trace(header=records[0])
    steps: dict[int, Step] = {}
    for record in records[1:]:
        kind = record.pop("type", None)
        if kind == "step":
            step = Step.from_dict(record)
            steps[step.index] = step
        elif kind == "resume":
            trace.decisions.append(record["decision"])
        elif kind == "result":
            trace.results.append(record)
        else:
            raise ValueError(f"{path}: unknown record type {kind!r}")
    trace.steps = [steps[i] for i in sorted(steps)]
    return trace


def diff_steps(recorded: list[Step], replayed: list[Step]) -> list[str]:
    """Where two runs' steps differ, timings aside: one line per difference, [] when they agree."""
    differences = []
    if len(recorded) != len(replayed):
        differences.append(f"{len(recorded)} steps recorded, {len(replayed)} replayed")
    for old, new in zip(recorded, replayed, strict=False):
        a, b = old.replayable(), new.replayable()
        differences += [f"step {old.index} {key}: {a[key]!r} != {b[key]!r}" for key in a if a[key] != b[key]]
    return differences
