"""The benchmark's task sets are frozen, consistent with their tools, fair to span-constrained arguments, and offline.

The hashes below were taken when the extended set was written, before any tuning of tool choice on it:
a change to a task, its expected tool or arguments, or a tool's name, description or schema fails
here, and means a new benchmark (new figures for every method), not an edit to this one.
"""

import hashlib
import json
import re
import socket
from dataclasses import asdict

import pytest

from agents.tasks import (
    ALL_TASKS,
    EXTENDED_TASKS,
    EXTENDED_TOOLS,
    SETS,
    TASKS,
    TOOLS,
    convert_currency,
    convert_units,
    count_words,
)
from agents.tools import FINAL_ANSWER, ToolFailed

FROZEN = {  # set: (tasks, sha256 of the tasks, sha256 of the tools)
    "original": (32, "aee93a4d24c799e40e9a5868042dc6a24866c83a8e22b36be3540b8697984b51",
                 "d7bea3837bcf41c8518ce80a97af86506f4cd5cd063e5f0445f80bc651bd3506"),
    "extended": (55, "e09022e1a3a2196e1b804efbd49f09230bce9599bfb73b5ce8f5e36a34a240b8",
                 "0162eae9b63eda9b3329e0e94478832957ed7c0f514ade0252b01d5f5bcea71e"),
}
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def numbers_in(text: str) -> set[float]:
    return {float(number.replace(",", "")) for number in _NUMBER.findall(text)}


@pytest.mark.parametrize("name", FROZEN)
def test_the_sets_are_frozen(name):
    task_set = SETS[name]
    count, tasks_hash, tools_hash = FROZEN[name]
    assert len(task_set.tasks) == count
    assert digest([asdict(task) for task in task_set.tasks]) == tasks_hash
    assert digest([[t.name, t.description, t.parameters] for t in task_set.tools]) == tools_hash


def test_the_original_set_is_the_first_benchmarks():
    assert TASKS is SETS["original"].tasks and [t.name for t in TOOLS] == [
        "calculator", "get_weather", "search_documents", "send_email"]
    assert ALL_TASKS == TASKS + EXTENDED_TASKS
    assert len({task.prompt for task in ALL_TASKS}) == len(ALL_TASKS)  # no task counted twice


@pytest.mark.parametrize("name", FROZEN)
def test_every_expected_call_fits_a_tool_of_its_set(name):
    tools = {t.name: t for t in SETS[name].tools}
    for task in SETS[name].tasks:
        if task.tool == FINAL_ANSWER:
            assert not task.arguments, task
            continue
        properties = tools[task.tool].parameters["properties"]
        for argument, value in task.arguments.items():
            assert argument in properties, (task.prompt, argument)
            if "enum" in properties[argument]:
                assert value in properties[argument]["enum"], (task.prompt, argument)


def test_the_extended_set_spreads_over_every_tool_and_style():
    tools = [t.tool for t in EXTENDED_TASKS]
    assert {t.name for t in EXTENDED_TOOLS} | {FINAL_ANSWER} == set(tools)
    assert all(3 <= tools.count(name) <= 6 for name in set(tools))
    styles = [t.style for t in EXTENDED_TASKS]
    assert all(styles) and all(styles.count(style) >= 5 for style in set(styles)) and len(set(styles)) == 7
    pairs = [("search_web", "search_documents"), ("convert_currency", "convert_units")]
    assert all(tools.count(a) >= 5 and tools.count(b) >= 5 for a, b in pairs)


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda task: task.prompt[:40])
def test_arguments_marked_as_spans_are_in_the_task(task):
    assert set(task.spans) <= set(task.arguments), "a span names an expected argument"
    for argument in task.spans:
        expected = task.arguments[argument]
        if isinstance(expected, str):
            assert expected.lower() in task.prompt.lower(), argument
        else:
            assert float(expected) in numbers_in(task.prompt), argument


def test_most_extended_arguments_are_spans():
    """A router that takes arguments from the task can reach nearly all of them; the rest say where it cannot."""
    expected = [(task, argument) for task in EXTENDED_TASKS for argument in task.arguments]
    outside = [(task.prompt, argument) for task, argument in expected
               if argument not in task.spans and task.tool != "calculator"]
    assert len(outside) == 2, outside  # "US dollars" for USD, "Microsoft's" share price


@pytest.mark.parametrize("tool", EXTENDED_TOOLS, ids=lambda t: t.name)
def test_no_tool_description_shows_an_example_value(tool):
    """A small model copies a docstring's example into its call (the "paris" of issue 19)."""
    texts = [tool.description, *(p.get("description", "") for p in tool.parameters["properties"].values())]
    assert not [text for text in texts if re.search(r"\be\.g\.|example|such as|like '", text, re.IGNORECASE)]


def test_the_stand_in_tools_run_offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a stand-in tool opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    for task in EXTENDED_TASKS:
        tool = {t.name: t for t in EXTENDED_TOOLS}.get(task.tool)
        if tool is None or tool.name == "calculator":
            continue
        required = tool.parameters.get("required", [])
        arguments = {name: task.arguments.get(name, "text") for name in required}
        assert tool.run(arguments) == tool.run(arguments)  # deterministic
    assert convert_currency.run({"amount": 250, "from_currency": "EUR", "to_currency": "usd"}) == \
        "250 EUR = 271.74 USD"
    assert convert_units.run({"value": 5, "from_unit": "miles", "to_unit": "km"}) == "5 miles = 8.047 km"
    assert convert_units.run({"value": 30, "from_unit": "degrees celsius", "to_unit": "°F"}) == \
        "30 degrees celsius = 86 °F"
    assert count_words.run({"text": "small models choose, they do not write facts"}) == 8


def test_a_stand_in_refuses_what_it_cannot_convert():
    with pytest.raises(ToolFailed, match="unknown currency code 'XYZ'"):
        convert_currency.run({"amount": 1, "from_currency": "xyz", "to_currency": "EUR"})
    with pytest.raises(ToolFailed, match="cannot convert length"):
        convert_units.run({"value": 1, "from_unit": "mile", "to_unit": "kg"})
