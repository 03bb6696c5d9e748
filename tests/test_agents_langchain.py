"""LangChain interop: our tools as StructuredTools and back, the same schema and behaviour both ways."""

import asyncio
import enum

import pytest
from langchain_core.tools import StructuredTool, ToolException
from langchain_core.tools import tool as langchain_tool
from pydantic import BaseModel

from agents import Agent, ScriptedModel, ToolArgumentError, ToolFailed, tool
from agents.langchain import LangChainModel, from_langchain, to_langchain
from core import ChatModel, ModelRequestError


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


@tool(timeout=5)
def weather(city: str, unit: Unit = Unit.CELSIUS) -> str:
    """Get the weather.

    Args:
        city: the city
        unit: the unit
    """
    return f"{city}: 20 {unit.value}"


def test_to_langchain_keeps_name_description_schema_and_validation():
    lc = to_langchain(weather)
    assert isinstance(lc, StructuredTool)
    assert (lc.name, lc.description) == ("weather", weather.description)
    assert lc.args_schema == weather.parameters
    assert lc.invoke({"city": "Oslo", "unit": "fahrenheit"}) == "Oslo: 20 fahrenheit"
    assert asyncio.run(lc.ainvoke({"city": "Oslo"})) == "Oslo: 20 celsius"
    with pytest.raises(ToolException, match="unit: Input should be 'celsius' or 'fahrenheit'"):
        lc.invoke({"city": "Oslo", "unit": "kelvin"})
    lc.handle_tool_error = True  # LangChain's own switch now applies to our errors
    assert "Input should be" in lc.invoke({"city": "Oslo", "unit": "kelvin"})


def test_our_tool_survives_the_round_trip():
    back = from_langchain(to_langchain(weather), timeout=5)
    assert (back.name, back.description, back.parameters) == (weather.name, weather.description, weather.parameters)
    assert back.run({"city": "Rome"}) == weather.run({"city": "Rome"})
    with pytest.raises(ToolArgumentError, match="missing \\['city'\\]"):
        back.run({})


class Query(BaseModel):
    text: str
    limit: int = 3


@langchain_tool
def search(query: Query) -> str:
    """Search the web."""
    return f"{query.limit} results for {query.text}"


@langchain_tool
async def ping(host: str) -> str:
    """Ping a host."""
    return f"pong from {host}"


@langchain_tool
def fail(x: int) -> int:
    """Always fails."""
    raise RuntimeError("nope")


def test_a_langchain_tool_becomes_ours_and_back():
    ours = from_langchain(search, side_effects=True)
    assert ours.name == "search" and ours.description == "Search the web." and ours.side_effects
    query = ours.parameters["properties"]["query"]
    assert query["required"] == ["text"] and "$ref" not in repr(ours.parameters)
    assert ours.run({"query": {"text": "llm"}}) == "3 results for llm"
    with pytest.raises(ToolArgumentError, match="query.text: Field required"):
        ours.run({"query": {}})
    again = to_langchain(ours)
    assert again.invoke({"query": {"text": "x", "limit": 1}}) == "1 results for x"
    assert from_langchain(ping).is_async and from_langchain(ping).run({"host": "h"}) == "pong from h"
    with pytest.raises(ToolFailed, match="RuntimeError: nope"):
        from_langchain(fail).run({"x": 1})


def test_an_agent_runs_langchain_tools():
    outputs = [{"tool": "search", "arguments": {"query": {"text": "agents"}}},
               {"tool": "final_answer", "arguments": {"answer": "found"}}]
    result = Agent(ScriptedModel(outputs), [from_langchain(search)]).run("look it up")
    assert result.steps[0].observation == "3 results for agents" and result.answer == "found"


def test_a_langchain_chat_model_is_a_chat_model_an_agent_runs_on():
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    step = '{"tool": "final_answer", "arguments": {"answer": "hi"}}'
    model = LangChainModel(FakeListChatModel(responses=[step, "yes", "no"]))
    assert isinstance(model, ChatModel)
    result = Agent(model, [weather]).run("Say hi")
    assert result.answer == "hi" and result.steps[0].valid
    assert result.steps[0].prompt_tokens > 0 and result.steps[0].completion_tokens > 0  # estimated: no usage report
    assert model.generate_batch(["a", "b"]) == ["yes", "no"]
    with pytest.raises(ModelRequestError, match="JSON schema only"):
        LangChainModel(FakeListChatModel(responses=[]), constrain="response_format").stream("x", choices=["a"])
    with pytest.raises(ValueError, match="constrain must be one of"):
        LangChainModel(None, constrain="grammar")
