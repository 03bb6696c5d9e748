"""Agents on the real embedded SmolLM2 under constrained decoding: every step is valid, on every chat model.

Whether the 135M model picks the right tool is a figure, printed here for a sample of the task set
(bench/agents.py runs all of it and keeps the results), not something these tests require, except on the
README's example with five tools of one's own: what a user tries first must work.
"""

import re
from pathlib import Path

import pytest

from agents import Agent, calculator
from agents import backends as agent_backends
from agents.evaluate import TASKS, TOOLS, evaluate, summary
from agents.langchain import LangChainModel
from core import RemoteLLM
from core.langchain import ChatLLMKit

from conftest import SERVED_MODEL

SAMPLE = TASKS[::3][:10]  # 10 of the 32 tasks, every tool among them
OPTIONS = dict(max_steps=1, step_tokens=160, max_string_length=40)  # 160 tokens hold the longest call these allow
TASK = "What is 17 times 23?"


@pytest.fixture(scope="module", autouse=True)
def embedded(llm):
    """The run's SmolLM2 stands in as the embedded model that Agent() loads by default."""
    agent_backends._EMBEDDED["llm"] = llm
    yield
    agent_backends._EMBEDDED.clear()


def test_sampled_tasks_give_only_valid_steps(llm):
    outcomes = evaluate(llm, SAMPLE, workers=len(SAMPLE), **OPTIONS)  # one batch
    figures = summary(outcomes)
    print(f"\nSmolLM2-135M, {len(SAMPLE)} tasks: valid steps {figures['valid_step_rate']:.0%}, right tool "
          f"{figures['right_tool_rate']:.0%}, right arguments {figures['right_arguments_rate']:.0%}")
    for outcome in outcomes:
        print(f"  {'ok ' if outcome.right_tool else '-- '} {outcome.task.prompt[:50]:50} {outcome.first.output[:70]}")
    assert figures["valid_step_rate"] == 1.0, [o.first.output for o in outcomes if not o.valid]
    assert all(o.first.finish_reason == "stop" for o in outcomes), "a step was cut off by the token limit"


def test_the_three_line_api_runs_on_the_embedded_model(llm):
    result = Agent(tools=[calculator], max_steps=2, step_tokens=160, max_string_length=40).run(TASK)
    assert result.steps and all(step.valid for step in result.steps)
    assert result.status in ("answered", "stopped")
    assert Agent().model is llm  # the embedded model, loaded once per process


def test_the_readme_example_with_five_tools_of_ones_own(llm):
    """The README's block runs as written, and its agent calls the right tool, with the task's words as arguments,
    on more tasks phrased as a user would, answering with the tool's result."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = next(code for code in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "def count_words" in code)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    result = namespace["result"]
    assert [step.tool for step in result.steps] == ["convert_currency", "final_answer"]
    assert result.steps[0].arguments == {"amount": 100, "from_currency": "GBP", "to_currency": "JPY"}
    assert result.answer == "100.0 GBP = 110.00 JPY"
    tools = list(namespace["agent"].tools.values())
    for task, tool_name, arguments, answer in (
            ("Is it raining in Lisbon?", "get_weather", {"city": "Lisbon"}, "Lisbon: 18 degrees, light rain"),
            ("How many words are in 'to be or not to be'?", "count_words", {"text": "to be or not to be"}, "6"),
            ("what time is it in Tokyo", "get_local_time", {"city": "Tokyo"}, "Tokyo: 14:05"),
            ("What is the NVDA share price?", "get_stock_price", {"ticker": "NVDA"}, "NVDA: 187.20 USD")):
        result = Agent(tools=tools).run(task)
        assert (result.steps[0].tool, result.steps[0].arguments, result.answer) == (tool_name, arguments, answer)
    assert Agent(tools=tools).run("Hi, how are you?").steps[0].tool == "final_answer"


def first_step(model):
    """Without routing, which the local model gets by default and the others do not: one decoding, the same for all."""
    return Agent(model, TOOLS, **OPTIONS, routing=None).run(TASK).steps[0]


def test_a_remote_model_over_llmkit_serve_equals_the_local_model(llm, served_url):
    """Same weights, template and schema, greedy: the server's step is the local one, token for token."""
    remote = first_step(RemoteLLM(served_url, SERVED_MODEL, context_length=llm.context_length))
    assert remote.valid and remote.prompt_tokens > 0 and remote.completion_tokens > 0
    local = first_step(llm)
    assert remote.output == local.output and remote.prompt_tokens == local.prompt_tokens


def test_a_langchain_chat_model_backend_with_the_schema(llm):
    step = first_step(LangChainModel(ChatLLMKit(llm=llm), constrain="json_schema"))
    assert step.valid and step.output == first_step(llm).output
