"""Mutation operators: candidate one-line edits of a suspicious line, as text at the positions the AST gives.

A mutation edits one line of the file as text (an operator between its operands, an expression's span), so a
candidate changes only what it means to and its diff is minimal; the result must parse. Operators: comparison,
boolean (and/or), arithmetic (also in augmented assignment), off-by-one (+1/-1 on indices, slice bounds, range()
and len() arguments, comparison operands and returned values; dropping a +k/-k), slice (a bound dropped),
swapped arguments (adjacent call arguments, the operands of a non-commutative operator), wrong variable (another
name of the same function's locals and parameters), missing return (an expression statement or assignment
returned; `return NAME` after a function's last line), extra return (a return removed), negated condition (of
an if/while/elif/ternary/assert, or of one operand of its and/or), constant change (an integer +1/-1,
True <-> False).

Does not: combine two mutations (a bug that needs two edits gets no candidate that fixes it), run anything, or
mutate lines longer than MAX_LINE_BYTES.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterator
from dataclasses import dataclass

COMPARISONS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
               ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}
COMPARISON_GROUPS = [("<", "<=", ">", ">=", "==", "!="), ("is", "is not"), ("in", "not in")]
ARITHMETIC = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
              ast.Pow: "**"}
ARITHMETIC_SWAPS = {"+": ("-",), "-": ("+",), "*": ("/", "//", "+"), "/": ("//", "*"), "//": ("/", "%"),
                    "%": ("//",), "**": ("*",)}
NON_COMMUTATIVE = (ast.Sub, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
ATOMS = (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.Constant)
MAX_LINE_BYTES = 400  # longer lines are not mutated


@dataclass(frozen=True)
class Candidate:
    """A whole-file replacement `text` for `file` that changes line `line`; `size`: characters changed."""

    file: str
    line: int
    text: str
    operator: str
    source: str  # "mutation" | "model"
    size: int
    rank: int  # of its line among the suspicious ones, 0 = most suspicious


def _segment(line: bytes, node: ast.AST) -> str:
    return line[node.col_offset:node.end_col_offset].decode()


def _on_line(node: ast.AST, number: int) -> bool:
    return getattr(node, "lineno", None) == number and getattr(node, "end_lineno", None) == number


def _gap_edit(line: bytes, left: ast.AST, right: ast.AST, old: str, new: str) -> tuple[int, int, str] | None:
    """Replace the operator `old` written between `left` and `right` by `new`."""
    gap = line[left.end_col_offset:right.col_offset].decode()
    index = gap.find(old)
    if index < 0:
        return None
    start = left.end_col_offset + len(gap[:index].encode())
    return start, start + len(old.encode()), new


def _shifted(line: bytes, node: ast.AST) -> Iterator[tuple[str, str]]:
    """The node's source plus and minus one, or its integer constant moved by one, or its +k/-k dropped."""
    text = _segment(line, node)
    if isinstance(node, ast.Constant):
        if type(node.value) is int:
            yield str(node.value + 1), "constant"
            yield str(node.value - 1), "constant"
        return
    additive = isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub)
    if additive and isinstance(node.right, ast.Constant):
        yield _segment(line, node.left), "off-by-one"
    wrapped = text if isinstance(node, ATOMS) or additive else f"({text})"
    yield f"{wrapped} + 1", "off-by-one"
    yield f"{wrapped} - 1", "off-by-one"


def _enclosing_function(tree: ast.Module, number: int) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    found = None
    for node in ast.walk(tree):
        if (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.lineno <= number <= node.end_lineno
                and (found is None or node.lineno >= found.lineno)):
            found = node
    return found


def _names_in_scope(tree: ast.Module, number: int) -> set[str]:
    """Parameters and assigned names of the innermost function around line `number` (module-level names if none)."""
    scope = _enclosing_function(tree, number)
    names = set()
    if scope is not None:
        arguments = scope.args
        names |= {a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]} - {"self", "cls"}
    for statement in (tree if scope is None else scope).body:
        for node in ast.walk(statement):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return names


def line_edits(tree: ast.Module, line: bytes, number: int) -> Iterator[tuple[tuple[int, int, str], str]]:
    """Each mutation of line `number` (its text `line`, bytes without the newline): ((start, end, new), operator)."""
    nodes = [node for node in ast.walk(tree) if _on_line(node, number)
             or isinstance(node, ast.If | ast.While) and node.lineno == number]  # a block's header line
    index_like: list[ast.AST] = []
    for node in nodes:
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            old = COMPARISONS[type(node.ops[0])]
            for group in COMPARISON_GROUPS:
                if old in group:
                    for new in group:
                        if new != old and (edit := _gap_edit(line, node.left, node.comparators[0], old, new)):
                            yield edit, "comparison"
            index_like += [node.left, node.comparators[0]]
        elif isinstance(node, ast.BoolOp):
            old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
            pieces, cursor = [], node.col_offset
            for left, right in zip(node.values, node.values[1:], strict=False):
                edit = _gap_edit(line, left, right, old, new)
                if edit is None:
                    break
                pieces.append(line[cursor:edit[0]].decode() + new)
                cursor = edit[1]
            else:
                yield (node.col_offset, node.end_col_offset, "".join(pieces) + line[cursor:node.end_col_offset]
                       .decode()), "boolean"
        elif isinstance(node, ast.BinOp) and type(node.op) in ARITHMETIC:
            old = ARITHMETIC[type(node.op)]
            for new in ARITHMETIC_SWAPS[old]:
                if edit := _gap_edit(line, node.left, node.right, old, new):
                    yield edit, "arithmetic"
            if isinstance(node.op, NON_COMMUTATIVE):
                left, right = _segment(line, node.left), _segment(line, node.right)
                middle = line[node.left.end_col_offset:node.right.col_offset].decode()
                yield (node.col_offset, node.end_col_offset, f"{right}{middle}{left}"), "swapped arguments"
        elif isinstance(node, ast.AugAssign) and type(node.op) in ARITHMETIC:
            old = ARITHMETIC[type(node.op)] + "="
            for new in ARITHMETIC_SWAPS[old[:-1]]:
                if edit := _gap_edit(line, node.target, node.value, old, new + "="):
                    yield edit, "arithmetic"
            index_like.append(node.value)
        elif isinstance(node, ast.Subscript):
            if isinstance(node.slice, ast.Slice):
                for bound in (node.slice.lower, node.slice.upper):
                    if bound is not None:
                        index_like.append(bound)
                        yield (bound.col_offset, bound.end_col_offset, ""), "slice"
            else:
                index_like.append(node.slice)
        elif isinstance(node, ast.Call):
            positional = [a for a in node.args if not isinstance(a, ast.Starred)]
            if isinstance(node.func, ast.Name) and node.func.id in ("range", "len", "min", "max"):
                index_like += positional
            for left, right in zip(positional, positional[1:], strict=False):
                middle = line[left.end_col_offset:right.col_offset].decode()
                yield (left.col_offset, right.end_col_offset,
                       f"{_segment(line, right)}{middle}{_segment(line, left)}"), "swapped arguments"
        elif isinstance(node, ast.Return) and node.value is not None:
            index_like.append(node.value)
        elif isinstance(node, ast.If | ast.While | ast.IfExp | ast.Assert) and _on_line(node.test, number):
            parts = [node.test, *(node.test.values if isinstance(node.test, ast.BoolOp) else [])]
            for test in parts:  # the whole condition, and each operand of an and/or
                if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
                    negated = _segment(line, test.operand)
                else:
                    text = _segment(line, test)
                    negated = f"not {text}" if isinstance(test, ATOMS) else f"not ({text})"
                yield (test.col_offset, test.end_col_offset, negated), "negated condition"
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            yield (node.col_offset, node.end_col_offset, str(not node.value)), "constant"
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            for new in (node.value + 1, node.value - 1):
                yield (node.col_offset, node.end_col_offset, str(new)), "constant"
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            for other in sorted(_names_in_scope(tree, number) - {node.id}):
                yield (node.col_offset, node.end_col_offset, other), "wrong variable"
    seen = set()
    for node in index_like:
        if not _on_line(node, number) or id(node) in seen:
            continue
        seen.add(id(node))
        for new, operator in _shifted(line, node):
            yield (node.col_offset, node.end_col_offset, new), operator


def statement_edits(tree: ast.Module, lines: list[str], number: int) -> Iterator[tuple[list[str], str]]:
    """Whole-line mutations of line `number`: (new lines for it, operator); missing and extra returns."""
    text = lines[number - 1]
    indent = text[:len(text) - len(text.lstrip())]
    newline = text[len(text.rstrip("\r\n")):] or "\n"
    function = _enclosing_function(tree, number)
    if function is None:
        return
    for node in ast.walk(function):
        if not isinstance(node, ast.stmt) or not _on_line(node, number) or node.col_offset != len(indent.encode()):
            continue
        if isinstance(node, ast.Return):
            yield [f"{indent}pass{newline}"], "extra return"
        elif isinstance(node, ast.Expr):
            yield [f"{indent}return {text.strip()}{newline}"], "missing return"
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            yield [text, f"{indent}return {node.targets[0].id}{newline}"], "missing return"
    returns_value = any(isinstance(n, ast.Return) and n.value is not None for n in ast.walk(function))
    if not returns_value and function.body[-1].end_lineno == number:
        body_indent = " " * function.body[0].col_offset
        end = lines[number - 1] if lines[number - 1].endswith("\n") else lines[number - 1] + "\n"
        for name in sorted(_names_in_scope(tree, number)):
            yield [end, f"{body_indent}return {name}{newline}"], "missing return"


def change_size(old: str, new: str) -> int:
    """Characters changed between two texts (replaced spans count their longer side)."""
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal")


def mutants(source: str, file: str, number: int, rank: int) -> list[Candidate]:
    """The mutations of line `number` of `source` that parse, smallest first, without duplicates."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    lines = source.splitlines(keepends=True)
    if not 1 <= number <= len(lines) or len(lines[number - 1].encode()) > MAX_LINE_BYTES:
        return []
    old = lines[number - 1]
    raw = old.rstrip("\r\n").encode()
    rewrites: list[tuple[list[str], str]] = []
    for (start, end, new), operator in line_edits(tree, raw, number):
        rewrites.append(([(raw[:start] + new.encode() + raw[end:]).decode() + old[len(old.rstrip("\r\n")):]],
                         operator))
    rewrites += list(statement_edits(tree, lines, number))
    found: dict[str, Candidate] = {}
    for replacement, operator in rewrites:
        text = "".join([*lines[:number - 1], *replacement, *lines[number:]])
        if text == source or text in found:
            continue
        try:
            ast.parse(text)
        except SyntaxError:
            continue
        found[text] = Candidate(file, number, text, operator, "mutation", change_size(old, "".join(replacement)), rank)
    return sorted(found.values(), key=lambda c: c.size)
