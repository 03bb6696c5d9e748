"""Agent: the step loop. Each step the model calls one tool or gives the final answer; the loop runs the tool.

The model is any core.ChatModel (the embedded SmolLM2 when none is given), called with plain messages
(agents.backends.plain_messages) and greedy unless `sampling` says otherwise. `stream(task)` returns an
`AgentRun` to iterate for `Step`s as they happen; `run(task)` consumes it and returns the `RunResult`.
The model's output is constrained to `agents.steps.step_schema`, so with a model that enforces
`json_schema` every step is a well-formed call. What the model's call causes (unparseable
output from an unconstrained backend, an unknown tool, arguments that fail validation, a tool that
raises or times out, a call a person rejected) is recorded on the step and shown to the model at the
next step: the model can correct itself. Errors in our code, and the model's failures (core.errors:
a refused request, a prompt over the context, a server that is gone), propagate.

Budgets (steps, tokens, seconds) are checked before each model call; a run that meets one stops with
status "stopped" and the reason. A tool with `requires_approval` pauses the run (status "paused"); the
`PausedRun` resumes in any Agent with the same tools. The agent keeps the conversation (`messages`)
across runs, so a follow-up task can refer to earlier ones; `reset()` forgets it. `history=` gives a
run the conversation before its task instead (a chat UI's earlier user and assistant turns).

Before each model call the prompt is fitted to the model's context (agents.context): the oldest tool
results, then the oldest earlier turns, are dropped from what the model is sent until it fits with
room for `step_tokens`; the step records what was dropped (`Step.trimmed`). The task and the latest step
are never dropped: when they alone do not fit, the run raises ContextLengthError.

A call that repeats an earlier successful call exactly (small models loop on one call) is not run
again: the model is told so, and its next step may only be the final answer.

Does not: summarise what trimming drops, run tools in parallel, or ask for a last answer when a budget
runs out. Tools are bounded by their own timeouts (agents.tools), not by max_seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import BaseModel

from agents.approvals import Decision, PausedRun
from agents.backends import embedded_llm, plain_messages
from agents.context import fit_context
from agents.routing import Routing, resolve, route
from agents.steps import (
    RunResult,
    Step,
    StepError,
    StepParseError,
    Trace,
    append_record,
    parse_call,
    read_trace,
    run_header,
    step_schema,
    system_prompt,
)
from agents.tools import FINAL_ANSWER, Tool, ToolArgumentError, ToolFailed, ToolTimeout, tool
from core.chat import ChatModel, ScriptedModel, ScriptedReply
from core.errors import ContextLengthError
from core.sampling import SamplingParams

DEFAULT_INSTRUCTIONS = "You are a helpful assistant. Use the tools when they help, then answer briefly."


class AgentRun:
    """Iterate for the steps as they happen; afterwards `result` holds the RunResult (as GenerationStream does)."""

    def __init__(self, steps: Generator[Step, None, RunResult]):
        self._steps = steps
        self.result: RunResult | None = None

    def __iter__(self) -> Iterator[Step]:
        if self.result is None:
            self.result = yield from self._steps


@dataclass
class _Run:
    task: str
    steps: list[Step]
    seconds_before: float  # spent before a pause
    trace: str | None
    started: float = field(default_factory=time.monotonic)

    def seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.started

    def tokens(self) -> int:
        return sum(step.prompt_tokens + step.completion_tokens for step in self.steps)


class Agent:
    """A model, tools (Tools or typed functions with docstrings) and budgets; see the module docstring.

    max_tokens: prompt and completion tokens of the whole run. step_tokens: the most one reply may
    take. max_string_length: the longest string (an argument, the answer) the model may write.
    max_observation_chars: a tool result longer than this is cut before the model sees it. sampling: the
    options of `model.stream` besides the step's token limit (temperature, top_p, seed, ...); greedy by default.
    routing: the tool chosen first, then its arguments (agents.routing): a Routing, True, None/False (one
    decoding of the whole step), or "auto", on for an in-process core.LLM (the embedded model) and off for others.
    """

    def __init__(self, model: ChatModel | None = None, tools: Iterable[Tool | Callable] = (),
                 instructions: str = DEFAULT_INSTRUCTIONS, *, max_steps: int = 8, max_tokens: int | None = None,
                 max_seconds: float | None = None, step_tokens: int = 512, max_string_length: int = 300,
                 max_observation_chars: int = 2000, sampling: dict | None = None,
                 routing: Routing | bool | str | None = "auto"):
        for name, value in (("max_steps", max_steps), ("step_tokens", step_tokens),
                            ("max_string_length", max_string_length), ("max_observation_chars", max_observation_chars),
                            ("max_tokens", max_tokens), ("max_seconds", max_seconds)):
            if value is not None and not (isinstance(value, int | float) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        self._model = model
        self.sampling = {"temperature": 0.0, **(sampling or {})}
        if "max_new_tokens" in self.sampling:
            raise ValueError("give the step's token limit as step_tokens, not as sampling max_new_tokens")
        SamplingParams(**self.sampling)  # a bad option fails here, not at the first step
        self.tools: dict[str, Tool] = {}
        for item in tools:
            made = item if isinstance(item, Tool) else tool(item)
            if made.name in self.tools:
                raise ValueError(f"two tools are named {made.name!r}")
            self.tools[made.name] = made
        self.instructions = instructions
        self.max_steps, self.max_tokens, self.max_seconds = max_steps, max_tokens, max_seconds
        self.step_tokens, self.max_string_length = step_tokens, max_string_length
        self.max_observation_chars = max_observation_chars
        self.schema = step_schema(list(self.tools.values()), max_string_length)
        self.answer_schema = step_schema([], max_string_length)  # after a repeated call: final_answer only
        self.system = system_prompt(instructions, list(self.tools.values()))
        resolve(routing, None if routing == "auto" else model)  # a bad setting fails here
        self._routing = routing
        self.messages: list[dict] = []  # the conversation so far, every run's; the system prompt is added per call

    @property
    def model(self) -> ChatModel:
        """The model given, or the embedded SmolLM2, loaded here on first use."""
        if self._model is None:
            self._model = embedded_llm()
        return self._model

    @property
    def routing(self) -> Routing | None:
        """The routing settings in force (None: off); "auto" decides by the model, so this may load it."""
        return resolve(self._routing, self.model if self._routing == "auto" else None)

    @property
    def limits(self) -> dict:
        return {"max_steps": self.max_steps, "max_tokens": self.max_tokens, "max_seconds": self.max_seconds,
                "step_tokens": self.step_tokens, "max_string_length": self.max_string_length,
                "max_observation_chars": self.max_observation_chars}

    def reset(self) -> None:
        """Forget the conversation: the next run starts fresh."""
        self.messages = []

    def run(self, task: str, trace: str | Path | None = None, *, history: list[dict] | None = None) -> RunResult:
        """Run `task` to an answer, a budget's end or a pause; `trace`: a JSON-lines file to append the run to.

        `history`: the conversation before the task, {"role": "user" or "assistant", "content": str} messages
        oldest first (a chat's earlier turns), in place of the one this agent kept; None goes on from that.
        """
        return _consume(self.stream(task, trace, history=history))

    def stream(self, task: str, trace: str | Path | None = None, *, history: list[dict] | None = None) -> AgentRun:
        """As `run`, step by step. Raises ValueError, before anything runs, for an empty task or a bad history."""
        if not isinstance(task, str) or not task.strip():
            raise ValueError(f"the task must be a non-empty string, got {task!r}")
        turns = None if history is None else checked_history(history)
        return AgentRun(self._start(task, None if trace is None else str(trace), turns))

    def resume(self, paused: PausedRun, decision: Decision, trace: str | Path | None = None) -> RunResult:
        """Carry on a paused run after a person's decision; the trace goes on in `trace`, else in the paused run's."""
        return _consume(self.resume_stream(paused, decision, trace))

    def resume_stream(self, paused: PausedRun, decision: Decision, trace: str | Path | None = None) -> AgentRun:
        """Raises ValueError, before anything runs, for a tool this agent lacks or edited arguments that do not fit."""
        tool_ = self.tools.get(paused.tool)
        if tool_ is None or not tool_.requires_approval:
            raise ValueError(f"this agent has no tool {paused.tool!r} that requires approval: resume the run with "
                             "an agent built with the same tools")
        if decision.action == "edit":
            tool_.validator(decision.arguments)  # ToolArgumentError (a ValueError) names what is wrong
        return AgentRun(self._resume(paused, decision, str(trace) if trace is not None else paused.trace))

    # --- the loop -------------------------------------------------------------------------------------------------

    def _start(self, task: str, trace: str | None, history: list[dict] | None) -> Generator[Step, None, RunResult]:
        if history is not None:
            self.messages = history
        run = _Run(task, [], 0.0, trace)
        if trace is not None:
            append_record(trace, "run", run_header(task, self.instructions, self.model.name,
                                                   list(self.tools.values()), self.limits, self.messages))
        self.messages.append({"role": "user", "content": task})
        return (yield from self._loop(run))

    def _resume(self, paused: PausedRun, decision: Decision, trace: str | None) -> Generator[Step, None, RunResult]:
        run = _Run(paused.task, [Step.from_dict(step.to_dict()) for step in paused.steps], paused.seconds, trace)
        self.messages = [dict(message) for message in paused.messages]
        if trace is not None:
            append_record(trace, "resume", {"decision": asdict(decision)})
        step = run.steps[-1]
        self._decide(step, decision)
        self._record(run, step)
        yield step
        return (yield from self._loop(run))

    def _loop(self, run: _Run) -> Generator[Step, None, RunResult]:
        while True:
            reason = self._over_budget(run)
            if reason is not None:
                return self._finish(run, "stopped", stop_reason=reason)
            step = self._model_step(run)
            self._record(run, step)
            yield step
            if step.approval == "pending":
                return self._finish(run, "paused")
            if step.tool == FINAL_ANSWER and step.error is None:
                return self._finish(run, "answered", answer=step.answer)

    def _over_budget(self, run: _Run) -> str | None:
        if len(run.steps) >= self.max_steps:
            return f"max_steps: {len(run.steps)} steps taken without a final answer"
        if self.max_tokens is not None and run.tokens() >= self.max_tokens:
            return f"max_tokens: {run.tokens()} tokens used, the budget is {self.max_tokens}"
        if self.max_seconds is not None and run.seconds() >= self.max_seconds:
            return f"max_seconds: {run.seconds():.1f} s spent, the budget is {self.max_seconds:g} s"
        return None

    def _model_step(self, run: _Run) -> Step:
        started = time.monotonic()
        repeated = bool(run.steps) and run.steps[-1].error is not None and run.steps[-1].error.kind == "repeated"
        messages, trimmed = self._fit(self.messages)
        prompt, schema, routed = self._prompt(messages), self.answer_schema if repeated else self.schema, None
        routing = None if repeated else self.routing
        if routing is not None:
            done = [s for s in run.steps[::-1] if s.error is None and s.tool not in (None, FINAL_ANSWER)
                    and s.approval in (None, "approved", "edited")]  # called, newest first
            newest_first = self.messages[::-1]
            earlier = [m["content"] for m in newest_first if m["role"] == "user" and m["content"] != run.task]
            results = [m["content"] for m in newest_first
                       if m["role"] == "tool" and m.get("name") and not m["content"].startswith("Error: ")]
            routed = route(self.model, prompt, run.task, [*earlier, *results], list(self.tools.values()), routing,
                           self.max_string_length, called=frozenset(s.tool for s in done),
                           results=[s.observation for s in done if s.observation])
            schema = routed.schema
        if routed is not None and routed.call is not None:  # scoring chose the whole call: nothing to decode
            text, reply = routed.call, _Written(self.model.count_tokens(prompt), _tokens(self.model, routed.call))
        else:
            reply = self.model.stream(prompt, json_schema=schema, max_new_tokens=self.step_tokens, **self.sampling)
            text = "".join(reply)
        step = Step(len(run.steps) + 1, text, prompt_tokens=reply.prompt_tokens,
                    completion_tokens=reply.completion_tokens, finish_reason=reply.finish_reason,
                    model_seconds=time.monotonic() - started, trimmed=trimmed,
                    routing=None if routed is None else routed.record)
        run.steps.append(step)
        self.messages.append({"role": "assistant", "content": text})
        try:
            step.tool, step.arguments = parse_call(text)
        except StepParseError as error:
            cut = reply.finish_reason == "length"
            return self._fail(step, "parse", f"{error}" + (f"; the reply was cut off at {self.step_tokens} tokens, "
                                                             "make it shorter" if cut else ""))
        if step.tool == FINAL_ANSWER:
            answer = step.arguments.get("answer") if isinstance(step.arguments, dict) else None
            if not isinstance(answer, str) or set(step.arguments) != {"answer"}:
                return self._fail(step, "arguments", f'{FINAL_ANSWER} takes exactly {{"answer": "<text>"}}')
            step.answer = answer
            return step
        tool_ = self.tools.get(step.tool)
        if tool_ is None:
            known = ", ".join([*self.tools, FINAL_ANSWER])
            return self._fail(step, "unknown_tool", f"there is no tool {step.tool!r}; the tools are: {known}")
        if any(s.tool == step.tool and s.arguments == step.arguments and s.error is None for s in run.steps[:-1]):
            return self._fail(step, "repeated", f"you already called {step.tool} with these arguments and its "
                                                f"result is above. Give your final answer now with {FINAL_ANSWER}")
        if tool_.requires_approval:
            try:
                tool_.validator(step.arguments)  # a person is asked only about a call that could run
            except ToolArgumentError as error:
                return self._fail(step, "arguments", str(error))
            step.approval = "pending"
            return step
        return self._execute(step, tool_)

    def _prompt(self, messages: list[dict]) -> list[dict]:
        return plain_messages([{"role": "system", "content": self.system}, *messages])

    def _fit(self, messages: list[dict]) -> tuple[list[dict], dict | None]:
        """The conversation as the model can take it with room for the reply (agents.context.fit_context)."""
        model = self.model
        try:
            return fit_context(messages, lambda kept: model.count_tokens(self._prompt(kept)), model.count_tokens,
                               model.context_length - self.step_tokens)
        except ContextLengthError as error:
            raise ContextLengthError(f"{error}: the context holds {model.context_length} tokens, {self.step_tokens} "
                                     "of them (step_tokens) kept for the reply. Shorten the task or the instructions, "
                                     "give fewer tools, lower step_tokens or max_observation_chars, or use a model "
                                     "with a longer context") from None

    def _decide(self, step: Step, decision: Decision) -> None:
        if decision.action == "reject":
            step.approval = "rejected"
            why = f": {decision.reason}" if decision.reason else ""
            self._fail(step, "rejected", f"a person rejected this call{why}. Do not make it again; carry on "
                                         "without it or give your final answer")
            return
        if decision.action == "edit":
            step.approval, step.proposed_arguments, step.arguments = "edited", step.arguments, decision.arguments
        else:
            step.approval = "approved"
        self._execute(step, self.tools[step.tool])

    def _execute(self, step: Step, tool_: Tool) -> Step:
        started = time.monotonic()
        try:
            result = tool_.run(step.arguments)
        except ToolArgumentError as error:
            return self._fail(step, "arguments", str(error))
        except ToolTimeout as error:
            return self._fail(step, "timeout", str(error))
        except ToolFailed as error:
            return self._fail(step, "tool", str(error))
        finally:
            step.tool_seconds = time.monotonic() - started
        text = observation_text(result, self.max_observation_chars)
        if step.approval == "edited":
            text = f"(a person changed the arguments to {json.dumps(step.arguments)}) {text}"
        return self._observe(step, text)

    def _fail(self, step: Step, kind: str, message: str) -> Step:
        step.error = StepError(kind, message)
        return self._observe(step, f"Error: {message}")

    def _observe(self, step: Step, text: str) -> Step:
        step.observation = text
        name = step.tool if step.error is None or step.error.kind != "parse" else None
        self.messages.append({"role": "tool", "name": name, "content": text})
        return step

    def _record(self, run: _Run, step: Step) -> None:
        if run.trace is not None:
            append_record(run.trace, "step", step.to_dict())

    def _finish(self, run: _Run, status: str, answer: str | None = None, stop_reason: str | None = None) -> RunResult:
        seconds = run.seconds()
        paused = None
        if status == "paused":
            paused = PausedRun(run.task, [dict(message) for message in self.messages], run.steps, seconds, run.trace)
        result = RunResult(run.task, status, run.steps, answer, stop_reason, paused, seconds)
        if run.trace is not None:
            append_record(run.trace, "result", {"status": status, "answer": answer, "stop_reason": stop_reason,
                                                "seconds": seconds, "prompt_tokens": result.prompt_tokens,
                                                "completion_tokens": result.completion_tokens})
        return result


@dataclass
class _Written:
    """What a step records of a reply the agent wrote itself (a call chosen whole by agents.routing's scores)."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"


def _tokens(model: ChatModel, text: str) -> int:
    """The tokens of `text` in `model`'s tokenizer (an in-process model's), else its words."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return len(text.split())
    return len(tokenizer.encode(text, add_special_tokens=False, parse_special=False))


def checked_history(history: list[dict]) -> list[dict]:
    """A copy of `history` as plain {"role", "content"} messages; ValueError naming the first that is not one."""
    if not isinstance(history, list | tuple):
        raise ValueError(f"history must be a list of messages, got {type(history).__name__}")
    turns = []
    for i, message in enumerate(history):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if role not in ("user", "assistant") or not isinstance(content, str):
            raise ValueError(f"history[{i}] must be a {{'role': 'user' or 'assistant', 'content': <text>}} message, "
                             f"got {message!r:.200}; the agent writes its own system prompt, and tool results "
                             "belong to its own runs")
        turns.append({"role": role, "content": content})
    return turns


def _consume(run: AgentRun) -> RunResult:
    for _ in run:
        pass
    return run.result


def observation_text(result, limit: int) -> str:
    """What the model sees of a tool's return value: text as it is, anything else as JSON; cut at `limit`."""
    if isinstance(result, str):
        text = result
    elif isinstance(result, BaseModel):
        text = result.model_dump_json()
    else:
        text = json.dumps(result, ensure_ascii=False, default=str)
    if len(text) > limit:
        text = f"{text[:limit]}... [{len(text) - limit} more characters cut]"
    return text


def replay(trace: str | Path | Trace, tools: Iterable[Tool | Callable]) -> RunResult:
    """Run a recorded run again, with a ScriptedModel giving the recorded outputs and the recorded decisions.

    The tools really run: pass stand-ins for tools with side effects. With deterministic tools the
    steps equal the recorded ones (`agents.steps.diff_steps`). A run that stopped on its time budget
    is replayed up to its recorded number of steps instead, as time is not reproducible.
    Raises ValueError when a tool is missing or its schema changed since the recording.
    """
    recorded = trace if isinstance(trace, Trace) else read_trace(trace)
    header = recorded.header
    limits = dict(header["limits"])
    if recorded.results and (recorded.results[-1].get("stop_reason") or "").startswith("max_seconds"):
        limits.update(max_seconds=None, max_steps=len(recorded.steps))
    outputs = [ScriptedReply(step.output, step.prompt_tokens, step.completion_tokens, step.finish_reason or "stop")
               for step in recorded.steps]
    agent = Agent(ScriptedModel(outputs), tools, header["instructions"], **limits)
    for spec in header["tools"]:
        if spec["name"] not in agent.tools:
            raise ValueError(f"the trace uses tool {spec['name']!r}, which is not among the tools given")
        if agent.tools[spec["name"]].parameters != spec["parameters"]:
            raise ValueError(f"tool {spec['name']!r} has a different schema from the one recorded")
    agent.messages = [dict(message) for message in header["history"]]
    result = agent.run(header["task"])
    for decision in recorded.decisions:
        if result.status != "paused":
            break
        result = agent.resume(result.paused, Decision(**decision))
    return result
