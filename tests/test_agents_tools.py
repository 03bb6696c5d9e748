"""@tool: schemas from signatures and docstrings, refusals of what cannot be described, validated and bounded calls."""

import asyncio
import enum
import threading
import time
from datetime import date
from typing import Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

from agents import Tool, ToolArgumentError, ToolDefinitionError, ToolFailed, ToolTimeout, tool
from agents.tools import DEFAULT_TIMEOUT_S, parse_docstring


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Address(BaseModel):
    street: str
    city: str = Field(description="the city")


class Contact(BaseModel):
    name: str
    addresses: list[Address] = []


def weather(city: str, unit: Unit = Unit.CELSIUS, days: int | None = None, mode: Literal["now", "week"] = "now",
            tags: list[str] | None = None, contact: Contact | None = None, on: date | None = None) -> str:
    """Get the weather for a city.

    Uses the forecast service.

    Args:
        city (str): the city's name,
            as people write it
        unit: the temperature unit
        days: how many days ahead

    Returns:
        a sentence
    """
    return f"{city}|{unit.value}|{days}|{mode}|{tags}|{contact}|{on}"


def test_schema_has_types_defaults_required_and_descriptions():
    t = tool(weather)
    assert t.name == "weather" and t.description == "Get the weather for a city. Uses the forecast service."
    p = t.parameters
    assert p["type"] == "object" and p["required"] == ["city"] and p["additionalProperties"] is False
    props = p["properties"]
    assert props["city"] == {"type": "string", "description": "the city's name, as people write it"}
    assert props["unit"] == {"enum": ["celsius", "fahrenheit"], "type": "string", "default": "celsius",
                             "description": "the temperature unit"}
    assert props["days"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None,
                             "description": "how many days ahead"}
    assert props["mode"] == {"enum": ["now", "week"], "type": "string", "default": "now"}
    assert props["tags"]["anyOf"][0] == {"type": "array", "items": {"type": "string"}}
    assert props["on"]["anyOf"][0] == {"type": "string", "format": "date"}


def test_nested_models_are_inlined_without_refs_or_titles():
    contact = tool(weather).parameters["properties"]["contact"]["anyOf"][0]
    text = repr(contact)
    assert "$ref" not in text and "'title'" not in text
    address = contact["properties"]["addresses"]["items"]
    assert address["required"] == ["street", "city"]
    assert address["properties"]["city"] == {"type": "string", "description": "the city"}


def test_the_schema_is_valid_json_schema_and_matches_validation():
    t = tool(weather)
    jsonschema.Draft202012Validator.check_schema(t.parameters)
    good = {"city": "Oslo", "unit": "fahrenheit", "contact": {"name": "A", "addresses": [{"street": "s", "city": "c"}]}}
    jsonschema.validate(good, t.parameters)
    assert t.validator(good)["unit"] is Unit.FAHRENHEIT
    assert isinstance(t.validator(good)["contact"], Contact)


def test_a_parameter_may_be_named_like_a_basemodel_attribute():
    @tool
    def describe(schema: str, json: int = 1) -> str:
        """Echo."""
        return f"{schema}{json}"

    assert set(describe.parameters["properties"]) == {"schema", "json"}
    assert describe.run({"schema": "s", "json": 2}) == "s2"


def test_validation_errors_name_each_problem():
    t = tool(weather)
    with pytest.raises(ToolArgumentError) as error:
        t.run({"unit": "kelvin", "extra": 1})
    message = str(error.value)
    assert "city: Field required" in message and "unit: Input should be" in message
    assert "extra: unknown argument" in message
    with pytest.raises(ToolArgumentError, match="must be a JSON object"):
        t.run(["Oslo"])


def test_run_validates_then_calls_with_typed_values():
    out = tool(weather).run({"city": "Oslo", "unit": "fahrenheit", "on": "2024-05-01"})
    assert out == "Oslo|fahrenheit|None|now|None|None|2024-05-01"
    assert tool(weather)("Rome") == "Rome|celsius|None|now|None|None|None"  # calling the Tool calls the function


def test_options_of_the_decorator():
    @tool(name="mail", side_effects=True, requires_approval=True, timeout=2)
    def send(to: str) -> str:
        """Send mail."""
        return to

    assert isinstance(send, Tool) and send.name == "mail"
    assert send.side_effects and send.requires_approval and send.timeout == 2


def f_star(*names: str) -> str:
    """Star."""


def f_kwargs(**options: str) -> str:
    """Kwargs."""


def f_untyped(x) -> str:
    """Untyped."""


def f_object(x: object) -> str:
    """Object."""


def f_callable(x: "callable") -> str:  # noqa: F821 - resolves to the builtin, which has no schema
    """Callable."""


def f_positional(x: int, /) -> str:
    """Positional only."""


def f_no_doc(x: int) -> str:
    return ""


def f_extra_doc(x: int) -> str:
    """Documents a ghost.

    Args:
        y: not a parameter
    """


class Node(BaseModel):
    children: list["Node"] = []


def f_recursive(tree: Node) -> str:
    """Recursive."""


class Opaque:
    pass


def f_opaque(x: Opaque) -> str:
    """Opaque."""


@pytest.mark.parametrize("function, message", [
    (f_star, "'names': \\*args and \\*\\*kwargs"),
    (f_kwargs, "'options': \\*args and \\*\\*kwargs"),
    (f_untyped, "'x': has no type annotation"),
    (f_object, "'x': type object admits anything"),
    (f_callable, "'x': type .* has no JSON schema"),
    (f_positional, "'x': is positional-only"),
    (f_no_doc, "has no docstring"),
    (f_extra_doc, "documents \\['y'\\], which is not a parameter"),
    (f_recursive, "recursive types are not supported"),
    (f_opaque, "'x': type Opaque has no JSON schema"),
])
def test_bad_signatures_are_refused_with_a_clear_message(function, message):
    with pytest.raises(ToolDefinitionError, match=message):
        tool(function)


@pytest.mark.parametrize("name", ["final_answer", "has space", "", "x" * 65])
def test_bad_names_are_refused(name):
    with pytest.raises(ToolDefinitionError):
        tool(name=name)(weather)


def test_docstring_sections_and_continuations():
    def f(a: int, b: int) -> int:
        """Add.

        Args:
            a: first
                continued
            b (int): second
        Raises:
            ValueError: never
        """

    description, arguments = parse_docstring(f, "f")
    assert description == "Add." and arguments == {"a": "first continued", "b": "second"}


def test_async_tools_run_and_time_out():
    @tool(timeout=0.2)
    async def fast(x: int) -> int:
        """Fast."""
        await asyncio.sleep(0)
        return x + 1

    @tool(timeout=0.2)
    async def slow(x: int) -> int:
        """Slow."""
        await asyncio.sleep(5)
        return x

    assert fast.is_async and fast.run({"x": 1}) == 2
    started = time.perf_counter()
    with pytest.raises(ToolTimeout, match="slow did not finish within 0.2 s"):
        slow.run({"x": 1})
    assert time.perf_counter() - started < 2


def test_async_tool_runs_inside_a_running_event_loop():
    @tool
    async def double(x: int) -> int:
        """Double."""
        return 2 * x

    async def main():
        return double.run({"x": 4})

    assert asyncio.run(main()) == 8


def test_sync_timeout_and_the_tools_own_errors():
    @tool(timeout=0.2)
    def sleepy(seconds: float) -> str:
        """Sleep."""
        time.sleep(seconds)
        return "woke"

    @tool
    def broken(x: int) -> int:
        """Broken."""
        return 1 // x

    assert sleepy.run({"seconds": 0}) == "woke"
    with pytest.raises(ToolTimeout):
        sleepy.run({"seconds": 3})
    with pytest.raises(ToolFailed, match="ZeroDivisionError: integer division or modulo by zero") as error:
        broken.run({"x": 0})
    assert isinstance(error.value.__cause__, ZeroDivisionError)


def test_a_timeout_error_raised_by_the_tool_is_not_our_timeout():
    @tool(timeout=5)
    def remote() -> str:
        """Calls a remote service."""
        raise TimeoutError("upstream timed out")

    with pytest.raises(ToolFailed, match="upstream timed out"):
        remote.run({})


def test_every_tool_is_bounded_unless_it_says_otherwise():
    @tool
    def where() -> str:
        """Say where this runs."""
        return threading.current_thread().name

    @tool(timeout=None)
    def here() -> str:
        """Say where this runs."""
        return threading.current_thread().name

    assert where.timeout == DEFAULT_TIMEOUT_S and here.timeout is None
    assert where.run({}) == "llmkit-tool" and here.run({}) == threading.current_thread().name  # None: called inline
