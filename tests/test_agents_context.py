"""history= and trimming to the context: what the model receives when a conversation outgrows it.

ScriptedModel counts one token per word of every message, so the budgets below are exact: a call is 5
tokens, a result of `read` 53 ("Result of read:" and 50 words), an emptied result 9.
"""

import pytest

from agents import Agent, ScriptedModel, diff_steps, read_trace, replay, tool
from agents.context import DROPPED
from core import ContextLengthError

EMPTIED = f"Result of read: {DROPPED}"


def call(name, /, **arguments):
    return {"tool": name, "arguments": arguments}


def answer(text):
    return call("final_answer", answer=text)


@tool
def read(page: int) -> str:
    """Read a page."""
    return " ".join(f"p{page}w{i}" for i in range(50))


def agent_within(outputs, limit, **options):
    """An agent whose model takes exactly `limit` tokens of conversation besides the system prompt and the reply."""
    model = ScriptedModel(outputs)
    agent = Agent(model, [read], **options)
    model.context_length = model.count_tokens([{"role": "system", "content": agent.system}]) + limit + agent.step_tokens
    return agent, model


def sent(model, index):
    """The contents of the conversation the model received at call `index`, without the system prompt."""
    return [message["content"] for message in model.calls[index].prompt[1:]]


def test_history_comes_before_the_task_in_place_of_the_kept_conversation():
    model = ScriptedModel([answer("ok"), answer("Ada"), answer("still Ada")])
    agent = Agent(model, [read])
    agent.run("Something else entirely.")
    history = [{"role": "user", "content": "My name is Ada."},
               {"role": "assistant", "content": "Hello Ada.", "metadata": None}]  # a chat UI's extra keys go
    result = agent.run("What is my name?", history=history)
    assert result.answer == "Ada" and sent(model, 1) == ["My name is Ada.", "Hello Ada.", "What is my name?"]
    assert [m["role"] for m in model.calls[1].prompt] == ["system", "user", "assistant", "user"]
    assert history[1] == {"role": "assistant", "content": "Hello Ada.", "metadata": None}  # the caller's, untouched
    agent.run("And now?")  # no history: the conversation goes on from the last run
    assert sent(model, 2)[:3] == ["My name is Ada.", "Hello Ada.", "What is my name?"]


@pytest.mark.parametrize("history, says", [
    ("hi", "history must be a list"),
    ([{"role": "system", "content": "Be brief."}], r"history\[0\] must be a"),
    ([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}], r"history\[1\] must be a"),
    ([{"role": "user", "content": ["a", "b"]}], r"history\[0\] must be a"),
    ([{"role": "user"}], r"history\[0\] must be a"),
    (["hello"], r"history\[0\] must be a"),
])
def test_a_bad_history_is_refused_before_anything_runs(history, says):
    model = ScriptedModel([answer("x")])
    with pytest.raises(ValueError, match=says):
        Agent(model, [read]).stream("t", history=history)
    assert model.calls == []


PAGES = [call("read", page=1), call("read", page=2), call("read", page=3), answer("done")]


@pytest.mark.parametrize("limit, emptied", [(177, 0), (133, 1), (89, 2)])
def test_the_oldest_tool_results_are_emptied_first_and_only_as_many_as_needed(limit, emptied):
    agent, model = agent_within(PAGES, limit)
    result = agent.run("Read three pages.")  # the 4th call: 3 + 3 calls + 3 results = 177 tokens
    pages = [f"Result of read: {read.function(page)}" for page in (1, 2, 3)]
    shown = [EMPTIED] * emptied + pages[emptied:]
    assert sent(model, 3) == ["Read three pages.", model.outputs[0], shown[0], model.outputs[1], shown[1],
                              model.outputs[2], shown[2]]
    assert result.steps[3].trimmed == (None if emptied == 0 else
                                       {"results": emptied, "messages": 0, "tokens": 177 - limit})
    assert model.count_tokens(model.calls[3].prompt) <= model.context_length - agent.step_tokens
    assert agent.messages[2]["content"] == read.function(1)  # only the prompt is trimmed, not the conversation


def test_the_latest_result_is_never_emptied_and_the_run_fails_clearly_when_it_cannot_fit():
    agent, model = agent_within(PAGES, 88)  # one short of the task, the calls and the latest result
    limit = model.context_length - agent.step_tokens
    with pytest.raises(ContextLengthError, match=f"the prompt has {limit + 1} tokens .* over the limit of {limit}: "
                                                 f"the context holds {model.context_length} tokens, 512 of them "
                                                 r"\(step_tokens\) kept for the reply"):
        agent.run("Read three pages.")
    assert len(model.calls) == 3


@pytest.mark.parametrize("limit, trimmed, shown", [
    (85, {"results": 1, "messages": 0, "tokens": 44}, ["Read page 1.", "{call 1}", EMPTIED, "{done}"]),
    (70, {"results": 1, "messages": 4, "tokens": 66}, []),
])
def test_earlier_turns_go_after_the_tool_results_oldest_first(limit, trimmed, shown):
    agent, model = agent_within([call("read", page=1), answer("done"), call("read", page=2), answer("done")], limit)
    agent.run("Read page 1.")
    result = agent.run("Read page 2.")  # its 2nd call: 66 tokens of the earlier run, then 3 + 5 + 53
    assert result.steps[1].trimmed == trimmed
    outputs = {"{call 1}": model.outputs[0], "{done}": model.outputs[1]}
    assert sent(model, 3) == [*(outputs.get(text, text) for text in shown), "Read page 2.", model.outputs[2],
                              f"Result of read: {read.function(2)}"]  # the task and the latest step stay


def test_the_oldest_turns_of_a_history_go_first_and_the_task_never():
    history = [{"role": "user", "content": "one " * 10}, {"role": "assistant", "content": "two " * 10},
               {"role": "user", "content": "three " * 10}, {"role": "assistant", "content": "four " * 10}]
    agent, model = agent_within([answer("x")], 33)
    result = agent.run("What was said?", history=history)  # 40 tokens of history and 3 of task
    assert [text.split()[0] for text in sent(model, 0)] == ["three", "four", "What"]
    assert result.steps[0].trimmed == {"results": 0, "messages": 2, "tokens": 20}
    agent, model = agent_within([answer("x")], 2)
    with pytest.raises(ContextLengthError, match="with every earlier turn and tool result dropped"):
        agent.run("What was said?", history=history)
    assert model.calls == []


def test_trimming_is_recorded_in_the_trace_and_a_replay_still_agrees(tmp_path):
    agent, _ = agent_within(PAGES, 133)
    path = tmp_path / "run.jsonl"
    result = agent.run("Read three pages.", trace=path)
    recorded = read_trace(path)
    assert [step.trimmed for step in recorded.steps] == [None, None, None, {"results": 1, "messages": 0, "tokens": 44}]
    replayed = replay(path, [read])  # on a model with a larger context: nothing to trim
    assert diff_steps(result.steps, replayed.steps) == [] and replayed.steps[3].trimmed is None
