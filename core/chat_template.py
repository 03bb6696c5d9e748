"""Chat templates rendered the way `transformers.apply_chat_template` renders them, within limits.

Same sandboxed Jinja environment, trim/lstrip settings, `tojson`, `raise_exception` and
`strftime_now`, so a model's template gives the exact prompt the model was trained on. Does not
support the `{% generation %}` tag (only used to build training masks).

A template comes with the model file, so it is foreign code: one rendering may take at most
`MAX_STEPS` loop iterations, calls and operators and `MAX_SECONDS`, and neither the prompt nor any
value built on the way may exceed `MAX_CHARS` characters (repetition, powers and widths are checked
before they run, other operations after, so one operation may briefly hold more). A template that fails or
goes over a limit raises ModelRequestError. Does not make a hostile template harmless: it bounds the
common ways to spend time and memory (loops, recursion, repetition, growing strings).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache, wraps

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from core.errors import ModelRequestError

MAX_STEPS = 200_000  # loop iterations, calls and operators in one rendering
MAX_SECONDS = 5.0
MAX_CHARS = 4_000_000  # the rendered prompt, and any string, list or dict built while rendering it
MAX_INT_BITS = 4096  # integers a template computes (a prompt has no use for bigger ones)


class TemplateLimitError(jinja2.exceptions.SecurityError):
    """A rendering went over one of this module's limits."""


@dataclass
class _Budget:
    steps: int
    deadline: float


_budget: ContextVar[_Budget] = ContextVar("chat_template_budget")


def _spend() -> None:
    budget = _budget.get()
    budget.steps -= 1
    if budget.steps < 0:
        raise TemplateLimitError(f"it took more than {MAX_STEPS:,} loop iterations, calls and operators")
    if time.monotonic() > budget.deadline:
        raise TemplateLimitError(f"it ran for more than {MAX_SECONDS} s")


def _sized(value):
    """`value`, if it is within the size limits."""
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimitError(f"it computed an integer of more than {MAX_INT_BITS} bits")
    if isinstance(value, str | bytes | list | tuple | dict | set) and len(value) > MAX_CHARS:
        raise TemplateLimitError(f"it built a value of more than {MAX_CHARS:,} items or characters")
    return value


def _counted(items: Iterable) -> Iterator:
    """The items of a `{% for %}` loop, each one spending a step."""
    for item in items:
        _spend()
        yield item


def _check_widths(arguments: tuple) -> None:
    """Refuse a number over MAX_CHARS given to a string method or a filter (a width, a count) before it runs."""
    if any(isinstance(a, int) and abs(a) > MAX_CHARS for a in arguments):
        raise TemplateLimitError(f"it passed a number over {MAX_CHARS:,} to a string method or filter")


def _check_repeat(left, right) -> None:
    """Refuse `text * n` (or `list * n`) whose result would be over the limit, before it is built."""
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, str | list | tuple) and isinstance(count, int) and len(sequence) * count > MAX_CHARS:
            raise TemplateLimitError(f"it repeated a value to more than {MAX_CHARS:,} items or characters")


class _LimitedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def call(self, context, function, /, *args, **kwargs):
        _spend()
        if isinstance(getattr(function, "__self__", None), str):  # "x".center(10**9) and the like
            _check_widths((*args, *kwargs.values()))
        return _sized(super().call(context, function, *args, **kwargs))

    def call_binop(self, context, operator, left, right):
        _spend()
        if operator == "*":
            _check_repeat(left, right)
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and \
                right * left.bit_length() > MAX_INT_BITS:
            raise TemplateLimitError(f"it computed an integer of more than {MAX_INT_BITS} bits")
        return _sized(super().call_binop(context, operator, left, right))


class _CountLoopsAndConcats(NodeTransformer):
    """Rewrites the template so every loop item spends a step and every `~` result is size-checked.

    Loop iterations and `~` are the two things a sandboxed template does without calling back into the
    environment (calls and operators do, through `_LimitedEnvironment`).
    """

    def visit_For(self, node: nodes.For) -> nodes.For:
        node = self.generic_visit(node)
        node.iter = _call("__llmkit_counted", node.iter)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Call:
        return _call("__llmkit_sized", self.generic_visit(node))


def _call(name: str, argument: nodes.Expr) -> nodes.Call:
    return nodes.Call(nodes.Name(name, "load"), [argument], [], None, None, lineno=argument.lineno)


def _limited_filter(function):
    options = 2 if getattr(function, "jinja_pass_arg", None) else 1  # after the context (if passed) and the value

    @wraps(function)  # keeps Jinja's pass_context / pass_environment marks
    def filtered(*args, **kwargs):
        _spend()
        _check_widths((*args[options:], *kwargs.values()))
        return _sized(function(*args, **kwargs))

    return filtered


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    env = _LimitedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.filters = {name: _limited_filter(function) for name, function in env.filters.items()}
    del env.globals["lipsum"]  # no chat template uses it, and it makes any amount of text from one number
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, __llmkit_counted=_counted,
                       __llmkit_sized=_sized)
    tree = _CountLoopsAndConcats().visit(env.parse(template))
    tree.set_environment(env)
    return env.from_string(tree)


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool = True, **variables) -> str:
    """The prompt text for `messages` ([{"role", "content"}, ...]); `variables` are bos_token, eos_token, ...

    Raises ModelRequestError when a message lacks its role or content, or the template fails on the
    messages (its own `raise_exception`, an error in it, a limit of this module).
    """
    for message in messages:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ModelRequestError(f"each message needs 'role' and 'content', got {message!r}")
    token = _budget.set(_Budget(MAX_STEPS, time.monotonic() + MAX_SECONDS))
    try:
        pieces, length = [], 0
        for piece in _compile(template).generate(messages=messages, add_generation_prompt=add_generation_prompt,
                                                 **variables):
            length += len(piece)
            if length > MAX_CHARS:
                raise TemplateLimitError(f"its prompt grew over {MAX_CHARS:,} characters")
            pieces.append(piece)
        return "".join(pieces)
    except TemplateLimitError as error:
        raise ModelRequestError(f"the model's chat template went over a limit on these messages: {error}") from None
    except (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError, MemoryError,
            RecursionError) as error:
        raise ModelRequestError(f"the model's chat template failed: {type(error).__name__}: {error}") from None
    finally:
        _budget.reset(token)
