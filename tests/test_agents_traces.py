"""Traces: one JSON line per step, read back exactly, and replayed identically with a scripted model."""

import json

import pytest

from agents import Agent, ScriptedModel, diff_steps, read_trace, replay, tool

OUTPUTS = [
    {"tool": "add", "arguments": {"a": 2, "b": 3}},
    "not json",
    {"tool": "divide", "arguments": {"a": 1, "b": 0}},
    {"tool": "nope", "arguments": {}},
    {"tool": "divide", "arguments": {"a": 10, "b": 4}},
    {"tool": "final_answer", "arguments": {"answer": "2.5"}},
]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def divide(a: float, b: float) -> float:
    """Divide a by b."""
    return a / b


def test_a_trace_has_a_header_one_record_per_step_and_the_result(tmp_path):
    path = tmp_path / "run.jsonl"
    result = Agent(ScriptedModel(OUTPUTS), [add, divide], max_steps=10).run("Divide 10 by 4.", trace=path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["type"] for r in records] == ["run"] + ["step"] * 6 + ["result"]
    header = records[0]
    assert header["format"] == "llmkit-agent-trace" and header["version"] == 1 and header["task"] == "Divide 10 by 4."
    assert [t["name"] for t in header["tools"]] == ["add", "divide"] and header["limits"]["max_steps"] == 10
    assert records[-1]["status"] == "answered" and records[-1]["answer"] == "2.5"
    trace = read_trace(path)
    assert [s.to_dict() for s in trace.steps] == [s.to_dict() for s in result.steps]


def test_a_recorded_run_replays_identically(tmp_path):
    path = tmp_path / "run.jsonl"
    agent = Agent(ScriptedModel([{"tool": "final_answer", "arguments": {"answer": "hi"}}, *OUTPUTS]), [add, divide])
    agent.run("Hello.")
    recorded = agent.run("Divide 10 by 4.", trace=path)  # the second turn: the header keeps the first as history
    assert read_trace(path).header["history"][0] == {"role": "user", "content": "Hello."}
    replayed = replay(path, [add, divide])
    assert diff_steps(recorded.steps, replayed.steps) == []
    assert (replayed.status, replayed.answer) == (recorded.status, recorded.answer)
    assert [e.error.kind for e in replayed.steps if e.error] == ["parse", "tool", "unknown_tool"]


def test_diff_steps_points_at_what_changed(tmp_path):
    path = tmp_path / "run.jsonl"
    Agent(ScriptedModel(OUTPUTS), [add, divide]).run("t", trace=path)

    @tool
    def divide_wrongly(a: float, b: float) -> float:
        """Divide a by b."""
        return a * b

    changed = tool(name="divide")(divide_wrongly.function)
    differences = diff_steps(read_trace(path).steps, replay(path, [add, changed]).steps)
    assert differences == ["step 3 observation: 'Error: ZeroDivisionError: float division by zero' != '0.0'",
                           "step 3 error: {'kind': 'tool', 'message': 'ZeroDivisionError: float division by zero'} "
                           "!= None",
                           "step 5 observation: '2.5' != '40.0'"]


def test_a_run_stopped_by_a_budget_replays_to_the_same_stop(tmp_path):
    path = tmp_path / "run.jsonl"
    recorded = Agent(ScriptedModel(OUTPUTS[:3]), [add, divide], max_steps=3).run("t", trace=path)
    replayed = replay(path, [add, divide])
    assert replayed.stop_reason == recorded.stop_reason == "max_steps: 3 steps taken without a final answer"
    assert diff_steps(recorded.steps, replayed.steps) == []


def test_replay_refuses_missing_or_changed_tools(tmp_path):
    path = tmp_path / "run.jsonl"
    Agent(ScriptedModel(OUTPUTS), [add, divide]).run("t", trace=path)

    @tool(name="add")
    def add_three(a: int, b: int, c: int = 0) -> int:
        """Add integers."""
        return a + b + c

    with pytest.raises(ValueError, match="'divide', which is not among the tools given"):
        replay(path, [add])
    with pytest.raises(ValueError, match="tool 'add' has a different schema"):
        replay(path, [add_three, divide])


def test_files_that_are_not_traces_are_refused(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"type": "step"}\n')
    with pytest.raises(ValueError, match="not an llmkit agent trace"):
        read_trace(path)
    path.write_text('{"type": "run", "format": "llmkit-agent-trace", "version": 7}\n')
    with pytest.raises(ValueError, match="trace version 7"):
        read_trace(path)
