"""The agent loop with a scripted model: calls and answers, errors as data, budgets, memory, streaming."""

import asyncio
import time

import jsonschema
import pytest

from agents import Agent, ScriptedModel, Step, tool
from agents.steps import MAX_INTEGER, MAX_ITEMS
from core import ContextLengthError, ModelRequestError, ScriptedReply


def call(name, /, **arguments):
    return {"tool": name, "arguments": arguments}


def answer(text):
    return call("final_answer", answer=text)


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first
        b: the second
    """
    return a + b


@tool
def divide(a: float, b: float) -> float:
    """Divide a by b."""
    return a / b


@tool
def tags(words: list[str]) -> str:
    """Join words."""
    return ",".join(words)


def test_a_tool_call_then_the_final_answer():
    model = ScriptedModel([call("add", a=2, b=3), answer("5")])
    agent = Agent(model, [add])
    result = agent.run("What is 2 + 3?")
    assert result.status == "answered" and result.answer == "5" and result.stop_reason is None
    first, last = result.steps
    assert (first.index, first.tool, first.arguments, first.observation) == (1, "add", {"a": 2, "b": 3}, "5")
    assert first.error is None and first.valid and last.answer == "5" and last.observation is None
    messages, options = model.calls[1]
    assert options == {"json_schema": agent.schema, "max_new_tokens": agent.step_tokens, "temperature": 0.0}
    assert messages[0]["role"] == "system" and "<tools>" in messages[0]["content"] and "add" in messages[0]["content"]
    assert messages[1:] == [{"role": "user", "content": "What is 2 + 3?"},
                            {"role": "assistant", "content": first.output},
                            {"role": "user", "content": "Result of add: 5"}]  # plain roles: any chat template
    assert result.prompt_tokens == first.prompt_tokens + last.prompt_tokens > 0


def test_the_step_schema_admits_the_calls_and_the_answer_and_nothing_else():
    schema = Agent(ScriptedModel([]), [add, tags], max_string_length=20).schema
    for good in (call("add", a=1, b=2), call("tags", words=["x"]), answer("fine")):
        jsonschema.validate(good, schema)
    for bad in (call("add", a=1), call("add", a=1, b=2, c=3), call("nope"), answer(3), answer("x" * 21),
                call("tags", words=["x"] * (MAX_ITEMS + 1)), call("add", a=MAX_INTEGER + 1, b=0),
                {"tool": "add", "arguments": {"a": 1, "b": 2}, "extra": 1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    assert [branch["description"] for branch in schema["anyOf"]][-1].startswith("Give the final answer")


@pytest.mark.parametrize("output, kind, says", [
    ("I think the answer is 5", "parse", "not a JSON object"),
    ('{"tool": "add", "arguments": {"a": 1', "parse", "not valid JSON"),
    (call("multiply", a=1, b=2), "unknown_tool", "no tool 'multiply'; the tools are: add, divide, final_answer"),
    (call("add", a="one", b=2), "arguments", "a: Input should be a valid integer"),
    (call("add", a=1), "arguments", "b: Field required"),
    (call("divide", a=1, b=0), "tool", "ZeroDivisionError: float division by zero"),
    ({"tool": "final_answer", "arguments": {"answer": 5}}, "arguments", "final_answer takes exactly"),
])
def test_errors_the_model_caused_are_recorded_and_shown_to_it(output, kind, says):
    model = ScriptedModel([output, answer("sorry")])
    result = Agent(model, [add, divide]).run("Compute something.")
    assert result.status == "answered" and len(result.steps) == 2
    step = result.steps[0]
    assert step.error.kind == kind and says in step.error.message
    assert step.valid == (kind == "tool")
    shown = model.calls[1].prompt[-1]
    assert shown["role"] == "user" and shown["content"].endswith(f"Error: {step.error.message}")


def test_a_reply_cut_off_by_the_token_limit_says_so():
    model = ScriptedModel([ScriptedReply('{"tool": "add", "argu', 10, 512, "length"), answer("x")])
    step = Agent(model, [add]).run("t").steps[0]
    assert step.error.kind == "parse" and "cut off at 512 tokens" in step.error.message


def test_errors_in_our_code_and_the_models_propagate():
    class Broken(ScriptedModel):
        def stream(self, prompt, **options):
            raise RuntimeError("backend down")

    with pytest.raises(RuntimeError, match="backend down"):
        Agent(Broken([]), [add]).run("t")
    with pytest.raises(RuntimeError, match="the script has only 1 outputs"):
        Agent(ScriptedModel([call("add", a=1, b=2)]), [add]).run("t")
    with pytest.raises(ContextLengthError, match="the context holds 300"):  # the step's 512 tokens do not fit
        Agent(ScriptedModel([answer("x")], context_length=300), [add]).run("t")


def test_sampling_options_reach_the_model_and_bad_ones_are_refused_up_front():
    model = ScriptedModel([answer("hi")])
    Agent(model, [add], sampling={"temperature": 0.7, "seed": 3}).run("t")
    assert (model.calls[0].options["temperature"], model.calls[0].options["seed"]) == (0.7, 3)
    with pytest.raises(ModelRequestError, match="temperature"):
        Agent(model, [add], sampling={"temperature": -1})
    with pytest.raises(ValueError, match="as step_tokens"):
        Agent(model, [add], sampling={"max_new_tokens": 5})


def test_async_tools_and_timeouts_in_a_run():
    @tool
    async def fetch(url: str) -> str:
        """Fetch a page."""
        await asyncio.sleep(0)
        return f"<html>{url}</html>"

    @tool(timeout=0.1)
    async def hang(seconds: float) -> str:
        """Wait."""
        await asyncio.sleep(seconds)
        return "done"

    model = ScriptedModel([call("fetch", url="a"), call("hang", seconds=5), answer("ok")])
    result = Agent(model, [fetch, hang]).run("t")
    assert result.steps[0].observation == "<html>a</html>"
    assert result.steps[1].error.kind == "timeout" and result.steps[1].tool_seconds < 2
    assert result.status == "answered"


def test_max_steps_stops_the_run_with_the_reason():
    model = ScriptedModel([call("add", a=1, b=1)] * 5)
    result = Agent(model, [add], max_steps=3).run("loop forever")
    assert result.status == "stopped" and result.answer is None and len(result.steps) == 3 == len(model.calls)
    assert result.stop_reason == "max_steps: 3 steps taken without a final answer"


def test_the_token_budget_is_checked_before_each_step():
    step = ScriptedReply('{"tool": "add", "arguments": {"a": 1, "b": 1}}', 100, 20)
    result = Agent(ScriptedModel([step] * 5), [add], max_tokens=250).run("t")
    assert len(result.steps) == 3  # 120, 240 are under the budget; 360 is not
    assert result.stop_reason == "max_tokens: 360 tokens used, the budget is 250"


def test_the_time_budget_stops_a_slow_run():
    @tool
    def slow(attempt: int) -> str:
        """Takes a while."""
        time.sleep(0.3)
        return "ok"

    result = Agent(ScriptedModel([call("slow", attempt=i) for i in range(5)]), [slow], max_seconds=0.5).run("t")
    assert result.status == "stopped" and len(result.steps) == 2 and result.stop_reason.startswith("max_seconds: 0.6")
    assert 0.5 <= result.seconds < 2


def test_the_conversation_is_kept_across_runs_until_reset():
    model = ScriptedModel([answer("Hello Ada"), answer("Your name is Ada"), answer("I do not know")])
    agent = Agent(model, [add])
    agent.run("My name is Ada.")
    agent.run("What is my name?")
    assert [m["content"] for m in model.calls[1][0][1:]] == ["My name is Ada.", model.outputs[0], "What is my name?"]
    agent.reset()
    agent.run("What is my name?")
    assert [m["content"] for m in model.calls[2][0][1:]] == ["What is my name?"]


def test_stream_yields_each_step_and_run_gives_the_same():
    outputs = [call("add", a=1, b=2), call("add", a=3, b=3), answer("6")]
    run = Agent(ScriptedModel(outputs), [add]).stream("t")
    steps = []
    for step in run:
        assert isinstance(step, Step) and run.result is None
        steps.append(step)
    assert run.result.steps == steps and [s.index for s in steps] == [1, 2, 3]
    again = Agent(ScriptedModel(outputs), [add]).run("t")
    assert [s.replayable() for s in again.steps] == [s.replayable() for s in steps]


def test_plain_functions_become_tools_and_names_must_be_unique():
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    result = Agent(ScriptedModel([call("shout", text="hi"), answer("HI")]), [shout]).run("t")
    assert result.steps[0].observation == "HI"
    with pytest.raises(ValueError, match="two tools are named 'add'"):
        Agent(ScriptedModel([]), [add, add])
    with pytest.raises(ValueError, match="max_steps must be a positive number"):
        Agent(ScriptedModel([]), [add], max_steps=0)
    with pytest.raises(ValueError, match="non-empty string"):
        Agent(ScriptedModel([]), [add]).run("  ")


def test_long_results_are_cut_and_structured_results_are_json():
    @tool
    def big() -> dict:
        """Lots of data."""
        return {"rows": list(range(1000))}

    result = Agent(ScriptedModel([call("big"), answer("ok")]), [big], max_observation_chars=50).run("t")
    observation = result.steps[0].observation
    assert observation.startswith('{"rows": [0, 1, 2') and observation.endswith("more characters cut]")


def test_a_repeated_call_is_not_run_again_and_the_next_step_must_answer():
    calls = []

    @tool
    def lookup(word: str) -> str:
        """Look a word up."""
        calls.append(word)
        return f"{word}: a fruit"

    model = ScriptedModel([call("lookup", word="apple"), call("lookup", word="apple"), answer("A fruit.")])
    result = Agent(model, [lookup]).run("What is an apple?")
    assert calls == ["apple"] and result.answer == "A fruit." and len(result.steps) == 3
    assert result.steps[1].error.kind == "repeated" and "already called lookup" in result.steps[1].observation
    assert model.calls[1].options["json_schema"]["anyOf"][0]["properties"]["tool"] == {"const": "lookup"}
    assert [b["properties"]["tool"] for b in model.calls[2].options["json_schema"]["anyOf"]] == [
        {"const": "final_answer"}]
