"""Tools: typed Python functions with docstrings, turned into a name, a description and a JSON schema.

`@tool` reads the signature once, at definition: every parameter needs a type annotation that has a
JSON schema (str, int, float, bool, lists, dicts, enums, Literal, Optional, Pydantic models, dates),
and the docstring gives the description (its text before any section) and one line per argument (its
Google-style `Args:` section). A signature that cannot be described is refused there, with a message
naming the parameter, rather than on the model's first call; so is a schema that constrained decoding
cannot enforce. A set is asked for as an array: validation collapses duplicates. Arguments are validated by a Pydantic
model built from the same signature, so what the schema admits and what the function receives agree.

Every call is bounded: by the tool's `timeout`, DEFAULT_TIMEOUT_S unless given (None: unbounded). At
the timeout an async function is cancelled, but a sync one cannot be stopped (Python cannot kill a
thread): it runs on in its daemon thread. `isolated=True` runs the function in a new process instead
(agents.isolation), killed with every process it started at the timeout; its arguments and result must
pickle and it must be defined at the top level of a module, which is checked at definition.

The errors a call can raise are `ToolError`s: bad arguments, a timeout, or the function's own
exception (wrapped). They are the caller's (the model's) fault and the agent shows them to the model;
anything else raised here is a bug and propagates (an isolated tool's argument that does not pickle too).

Does not: coerce strings into numbers for a schema that says string, or support recursive types (the
schema is inlined).
"""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
import typing
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PydanticUserError, TypeAdapter, ValidationError, create_model

from agents.isolation import ChildError, Expired, NotIsolatable, check_isolatable, run_isolated
from core.json_schema import UnsupportedSchemaError, check_supported, map_schema

DEFAULT_TIMEOUT_S = 60.0  # a tool's, unless it says otherwise: long enough for a tool that asks a model on a CPU
FINAL_ANSWER = "final_answer"  # the pseudo-tool that ends a run; no tool may take its name
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")  # what OpenAI-style function names allow
_SECTIONS = ("Args", "Arguments", "Parameters", "Returns", "Return", "Raises", "Yields", "Examples", "Example",
             "Note", "Notes", "See Also")


class ToolDefinitionError(TypeError):
    """A function that cannot become a tool: says which parameter and what to change."""


class ToolError(Exception):
    """A call that failed because of what the caller passed or what the tool did; shown to the model."""


class ToolArgumentError(ToolError, ValueError):
    """The arguments do not fit the tool's schema."""


class ToolTimeout(ToolError, TimeoutError):
    """The tool did not return within its timeout."""


class ToolFailed(ToolError):
    """The tool's function raised; `__cause__` is its exception (an isolated tool's: agents.isolation.ChildError)."""


@dataclass(frozen=True, eq=False)
class Tool:
    """A callable the agent may use. Calling the Tool calls the function directly, unvalidated.

    `validator` turns a JSON object of arguments into the function's keyword arguments (raising
    ToolArgumentError); `parameters` is the JSON schema of that object, self-contained (no $ref).
    `timeout`: seconds, None for no bound. `isolated`: run the function in a process that the timeout kills.
    """

    name: str
    description: str
    parameters: dict
    function: Callable[..., Any] = field(repr=False)
    validator: Callable[[Any], dict] = field(repr=False)
    side_effects: bool = False
    requires_approval: bool = False
    timeout: float | None = DEFAULT_TIMEOUT_S
    isolated: bool = False
    examples: tuple[dict, ...] = ()  # example arguments, shown to the model as examples (never as defaults)

    def __post_init__(self):
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise ToolDefinitionError(f"invalid tool name {self.name!r}: use 1 to 64 letters, digits, '_' or '-', "
                                      "starting with a letter or '_'")
        if self.name == FINAL_ANSWER:
            raise ToolDefinitionError(f"{FINAL_ANSWER!r} is reserved: the agent uses it to end a run")
        if self.timeout is not None and not (isinstance(self.timeout, int | float) and self.timeout > 0):
            raise ToolDefinitionError(f"tool {self.name!r}: timeout must be a positive number of seconds, "
                                      f"got {self.timeout!r}")
        for example in self.examples:
            try:
                self.validator(example)
            except ToolArgumentError as error:
                raise ToolDefinitionError(f"tool {self.name!r}: example {example!r} does not fit: {error}") from None
        if self.isolated:
            try:
                check_isolatable(self.function)
            except NotIsolatable as error:
                raise ToolDefinitionError(f"tool {self.name!r} cannot be isolated: {error}") from None

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)

    def run(self, arguments: Any) -> Any:
        """Validate `arguments` (a dict), call the function with them, within the timeout; raises only ToolError."""
        kwargs = self.validator(arguments)
        if self.isolated:
            return self._run_isolated(kwargs)
        try:
            if self.is_async:
                return _in_thread(lambda: asyncio.run(_bounded(self.function(**kwargs), self.timeout)),
                                  None if self.timeout is None else self.timeout + _ASYNC_GRACE_S)
            if self.timeout is None:
                return self.function(**kwargs)
            return _in_thread(lambda: self.function(**kwargs), self.timeout)
        except Expired:
            raise ToolTimeout(f"{self.name} did not finish within {self.timeout:g} s") from None
        except Exception as error:
            raise ToolFailed(f"{type(error).__name__}: {error}") from error

    def _run_isolated(self, kwargs: dict) -> Any:
        try:
            return run_isolated(self.function, kwargs, self.timeout)
        except NotIsolatable as error:  # the tool's definition or parameter types, not the model's doing: a bug
            raise ToolDefinitionError(f"tool {self.name!r} cannot be isolated: {error}") from None
        except Expired:
            raise ToolTimeout(f"{self.name} did not finish within {self.timeout:g} s; its process was "
                              "killed") from None
        except ChildError as error:
            raise ToolFailed(f"{error.type_name}: {error.message}") from error


_ASYNC_GRACE_S = 1.0  # beyond an async tool's timeout, for a coroutine that blocks instead of awaiting


async def _bounded(coroutine, timeout: float | None):
    """wait_for, cancelling the coroutine at the timeout; a TimeoutError the coroutine raises itself reads as ours."""
    try:
        return await asyncio.wait_for(coroutine, timeout)
    except TimeoutError:
        if timeout is None:
            raise
        raise Expired() from None


def _in_thread(call: Callable[[], Any], timeout: float | None) -> Any:
    """`call()` in a daemon thread: a tool that never returns cannot hold up the interpreter's exit."""
    future: Future = Future()

    def target():
        try:
            future.set_result(call())
        except BaseException as error:  # handed to the waiting caller, who re-raises it
            future.set_exception(error)

    threading.Thread(target=target, daemon=True, name="llmkit-tool").start()
    try:
        return future.result(timeout)
    except TimeoutError:
        if future.done():  # the tool's own TimeoutError, raised in time
            raise
        raise Expired() from None


def tool(function: Callable | None = None, *, name: str | None = None, side_effects: bool = False,
         requires_approval: bool = False, timeout: float | None = DEFAULT_TIMEOUT_S, isolated: bool = False,
         examples: list[dict] | None = None):
    """`@tool` or `@tool(side_effects=True, requires_approval=True, timeout=10, isolated=True)`: a Tool from a
    typed function. `examples`: arguments of typical calls ({"city": "Oslo"}), each checked against the signature.

    Raises ToolDefinitionError for a signature the model could not be told about, or a function that
    cannot be isolated (see the module docstring).
    """

    def make(function: Callable) -> Tool:
        if not callable(function):
            raise ToolDefinitionError(f"@tool takes a function, got {type(function).__name__}")
        tool_name = function.__name__ if name is None else name
        description, documented = parse_docstring(function, tool_name)
        model, fields = arguments_model(function, tool_name, documented)
        return Tool(tool_name, description, tool_schema(model.model_json_schema(by_alias=True), tool_name), function,
                    _validator(model, fields, tool_name), side_effects, requires_approval, timeout, isolated,
                    tuple(dict(example) for example in examples or ()))

    return make(function) if function is not None else make


def parse_docstring(function: Callable, tool_name: str) -> tuple[str, dict[str, str]]:
    """(description, {argument: description}) from a Google-style docstring; the description is required."""
    doc = inspect.getdoc(function)
    if not doc or not doc.strip():
        raise ToolDefinitionError(f"tool {tool_name!r} has no docstring: write one, it is the description the "
                                  "model reads to decide when to call the tool")
    lines = doc.splitlines()
    headers = [i for i, line in enumerate(lines) if line.strip().rstrip(":") in _SECTIONS and line.strip().endswith(":")
               and not line.startswith((" ", "\t"))]
    end = headers[0] if headers else len(lines)
    description = " ".join(" ".join(lines[:end]).split())
    if not description:
        raise ToolDefinitionError(f"tool {tool_name!r}: the docstring starts with a section; put the description "
                                  "first")
    arguments: dict[str, str] = {}
    stops = [*headers[1:], len(lines)] if headers else []
    for start, stop in zip(headers, stops, strict=True):
        if lines[start].strip().rstrip(":") not in ("Args", "Arguments", "Parameters"):
            continue
        current = None
        body = [line for line in lines[start + 1:stop] if line.strip()]
        indent = min((len(line) - len(line.lstrip()) for line in body), default=0)
        for line in body:
            entry = re.fullmatch(r"\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)", line.strip())
            if len(line) - len(line.lstrip()) == indent and entry:
                current = entry.group(1)
                arguments[current] = entry.group(2).strip()
            elif current is not None:  # a continuation line, indented further
                arguments[current] = f"{arguments[current]} {line.strip()}".strip()
    return description, arguments


def arguments_model(function: Callable, tool_name: str,
                    documented: dict[str, str]) -> tuple[type[BaseModel], dict[str, str]]:
    """A Pydantic model of the arguments, and its field names -> parameter names.

    Fields are named `p_<name>` with the parameter's name as alias, so a parameter may be called
    `schema`, `json` or `_x` without clashing with BaseModel's own attributes.
    """
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as error:  # a forward reference that does not resolve: NameError and others
        raise ToolDefinitionError(f"tool {tool_name!r}: cannot resolve its type hints ({error})") from error
    extra = set(documented) - set(signature.parameters)
    if extra:
        raise ToolDefinitionError(f"tool {tool_name!r}: the docstring documents {sorted(extra)}, which "
                                  f"{'is not a parameter' if len(extra) == 1 else 'are not parameters'}")
    definitions, fields = {}, {}
    for parameter in signature.parameters.values():
        where = f"tool {tool_name!r}, parameter {parameter.name!r}"
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ToolDefinitionError(f"{where}: *args and **kwargs cannot be described to a model; name each "
                                      "argument")
        if parameter.kind == parameter.POSITIONAL_ONLY:
            raise ToolDefinitionError(f"{where}: is positional-only, but tools are called with keyword arguments")
        if parameter.name not in hints:
            raise ToolDefinitionError(f"{where}: has no type annotation; add one (str, int, float, bool, a list, "
                                      "an Enum, a Literal or a Pydantic model)")
        annotation = hints[parameter.name]
        _check_type(annotation, where)
        default = ... if parameter.default is parameter.empty else parameter.default
        definitions[f"p_{parameter.name}"] = (annotation, Field(default, alias=parameter.name,
                                                                description=documented.get(parameter.name)))
        fields[f"p_{parameter.name}"] = parameter.name
    try:
        model = create_model(f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **definitions)
    except (PydanticUserError, TypeError, ValueError) as error:  # e.g. a default that does not fit its type
        raise ToolDefinitionError(f"tool {tool_name!r}: {error}") from error
    return model, fields


def _check_type(annotation: Any, where: str) -> None:
    try:
        schema = TypeAdapter(annotation).json_schema()
    except PydanticUserError as error:
        raise ToolDefinitionError(
            f"{where}: type {_type_name(annotation)} has no JSON schema; use str, int, float, bool, list, dict, "
            "an Enum, a Literal, Optional or a Pydantic model") from error
    if not schema:  # Any, object: the model would be told nothing about what to pass
        raise ToolDefinitionError(f"{where}: type {_type_name(annotation)} admits anything; give a concrete type so "
                                  "the model knows what to pass")


def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else repr(annotation).replace("typing.", "")


def tool_schema(schema: dict, tool_name: str) -> dict:
    """A self-contained copy of an arguments schema: $refs inlined, titles dropped (they only repeat the names).

    Raises ToolDefinitionError for a recursive type, or a keyword constrained decoding cannot enforce.
    """
    schema = dict(schema)
    definitions = schema.pop("$defs", {})

    def inline(node: dict, seen: tuple[str, ...] = ()) -> dict:
        node.pop("title", None)
        node.pop("uniqueItems", None)  # a set's: decoding cannot enforce it, and validation makes the set anyway
        if "$ref" not in node:
            return node
        ref = node.pop("$ref").rsplit("/", 1)[-1]
        if ref in seen:
            raise ToolDefinitionError(f"tool {tool_name!r}: type {ref} refers to itself; recursive types are not "
                                      "supported")
        return {**map_schema(definitions[ref], lambda sub: inline(sub, (*seen, ref))), **node}

    inlined = map_schema(schema, inline)
    try:
        check_supported(inlined)
    except UnsupportedSchemaError as error:
        raise ToolDefinitionError(f"tool {tool_name!r}: {error}") from error
    return inlined


def _validator(model: type[BaseModel], fields: dict[str, str], tool_name: str) -> Callable[[Any], dict]:
    def validate(arguments: Any) -> dict:
        if not isinstance(arguments, dict):
            raise ToolArgumentError(f"the arguments of {tool_name} must be a JSON object, got "
                                    f"{type(arguments).__name__}")
        try:
            parsed = model.model_validate(arguments)
        except ValidationError as error:
            raise ToolArgumentError(f"invalid arguments for {tool_name}: {describe_errors(error)}") from None
        return {parameter: getattr(parsed, name) for name, parameter in fields.items()}

    return validate


def describe_errors(error: ValidationError) -> str:
    """One clause per problem, `where: what`: short enough for a small model to read and act on."""
    problems = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "arguments"
        if problem["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown argument")
        else:
            problems.append(f"{where}: {problem['msg']}")
    return "; ".join(problems)
