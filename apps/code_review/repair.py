"""Candidate patches for suspicious lines, from mutation operators and (optionally) a model; verified in the
sandbox before anyone sees them.

A mutation edits one line of the file as text, at the positions the AST gives (an operator between its
operands, an expression's span), so a patch changes only what it means to and its diff is minimal; the
result must parse. Operators: comparison, boolean (and/or), arithmetic (also in augmented assignment),
off-by-one (+1/-1 on indices, slice bounds, range() and len() arguments, comparison operands and returned
values; dropping a +k/-k; dropping a slice bound), swapped arguments (adjacent call arguments, the operands
of a non-commutative operator), wrong variable (another name of the same function's locals and parameters),
missing return (an expression statement or assignment returned; `return NAME` after a function's last
line), extra return (a return removed), negated condition (if/while/elif/ternary/assert), constant change
(an integer +1/-1 or 0 <-> 1, True <-> False).

A model's candidate is {"file", "line", "replacement"} decoded under a JSON schema that limits the file to the
suspicious files and the line to their suspicious lines; the replacement replaces that whole line.

Verification (`verify`): a candidate is applied in the sandbox copy; the failing tests run first (stopping at
the first failure), then the whole suite only for survivors; a patch is kept when every failing test passes
and every passing one still does. Nothing unverified is returned. Patches are ranked by the size of the
change (characters), then by how suspicious their line was.

Does not: combine two mutations (a two-line bug is fixed only if one edit suffices), or edit test files.
"""

from __future__ import annotations

import ast
import difflib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from apps.code_review.localise import Suspicious
from apps.code_review.sandbox import Sandbox
from apps.code_review.testrun import TestRun, run_tests

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


@dataclass(frozen=True)
class Patch:
    """A verified candidate: `diff` (unified, relative to the project root, for `git apply`), the previously
    failing tests it makes pass."""

    file: str
    line: int
    diff: str
    fixed_tests: tuple[str, ...]
    size: int
    source: str
    operator: str
    text: str  # the patched file, to apply

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "diff": self.diff, "fixed_tests": list(self.fixed_tests),
                "size": self.size, "source": self.source, "operator": self.operator}


# ---- mutations of one line: (start, end, replacement) byte edits on that line, or whole-line rewrites ----


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
    nodes = [node for node in ast.walk(tree) if _on_line(node, number)]
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
            test = node.test
            if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
                yield (test.col_offset, test.end_col_offset, _segment(line, test.operand)), "negated condition"
            else:
                yield (test.col_offset, test.end_col_offset, f"not ({_segment(line, test)})"), "negated condition"
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            yield (node.col_offset, node.end_col_offset, str(not node.value)), "constant"
        elif isinstance(node, ast.Constant) and type(node.value) is int and node.value in (0, 1):
            yield (node.col_offset, node.end_col_offset, str(1 - node.value)), "constant"
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


# ---- the model's candidates ----


EDIT_PROMPT = """A test fails. Fix the bug by replacing ONE line of the code below.

Failing test output:
{failure}

Suspicious lines:
{context}

Reply with JSON: {{"file": ..., "line": ..., "replacement": "the corrected line, with its indentation"}}."""


def model_candidates(llm, sources: dict[str, str], suspicious: list[Suspicious], failure: str,
                     count: int = 3) -> list[Candidate]:
    """Up to `count` one-line edits from `llm`, each decoded under a schema that admits only the suspicious files
    and lines; an edit that does not parse or changes nothing is dropped."""
    top = [s for s in suspicious if s.file in sources][:5]
    if not top:
        return []
    context = []
    for s in top:
        lines = sources[s.file].splitlines()
        for number in range(max(1, s.line - 3), min(len(lines), s.line + 3) + 1):
            context.append(f"{s.file}:{number}: {lines[number - 1]}")
        context.append("")
    schema = {"type": "object", "additionalProperties": False, "required": ["file", "line", "replacement"],
              "properties": {"file": {"type": "string", "enum": sorted({s.file for s in top})},
                             "line": {"type": "integer", "enum": sorted({s.line for s in top})},
                             "replacement": {"type": "string", "maxLength": 200}}}
    prompt = [{"role": "user", "content": EDIT_PROMPT.format(failure=failure[-1500:], context="\n".join(context))}]
    found: dict[str, Candidate] = {}
    ranks = {(s.file, s.line): rank for rank, s in enumerate(top)}
    for attempt in range(count):
        reply = llm.generate(prompt, json_schema=schema, max_new_tokens=120, temperature=0.0 if attempt == 0 else 0.7,
                             seed=attempt)
        try:
            edit = json.loads(reply if isinstance(reply, str) else reply.text)
            file, number, replacement = edit["file"], int(edit["line"]), str(edit["replacement"])
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if file not in sources or (file, number) not in ranks:
            continue
        lines = sources[file].splitlines(keepends=True)
        old = lines[number - 1]
        new = replacement.rstrip("\r\n") + old[len(old.rstrip("\r\n")):]
        text = "".join([*lines[:number - 1], new, *lines[number:]])
        if text == sources[file] or text in found:
            continue
        try:
            ast.parse(text)
        except SyntaxError:
            continue
        found[text] = Candidate(file, number, text, "model edit", "model", change_size(old, new), ranks[(file, number)])
    return list(found.values())


# ---- verification ----


def unified_diff(file: str, old: str, new: str) -> str:
    """A minimal unified diff `git apply` accepts (a/ b/ prefixes, the no-newline marker where needed)."""
    def marked(lines: list[str]) -> list[str]:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n\\ No newline at end of file\n"
        return lines

    diff = difflib.unified_diff(marked(old.splitlines(keepends=True)), marked(new.splitlines(keepends=True)),
                                f"a/{file}", f"b/{file}", n=3)
    return f"diff --git a/{file} b/{file}\n" + "".join(diff)


@dataclass
class Verification:
    patches: list[Patch]
    tried: int
    seconds: float
    stopped: str | None  # "candidates" | "seconds" when a budget ended the search, else None


def verify(sandbox: Sandbox, baseline: TestRun, test_cmd: str, candidates: list[Candidate], max_candidates: int,
           max_seconds: float, max_patches: int = 5, progress: Callable[[str], None] | None = None) -> Verification:
    """Try `candidates` in order in the sandbox; return the verified ones, ranked (see the module docstring)."""
    start = time.monotonic()
    failing, passing = baseline.failing, set(baseline.passing)
    per_run = max(5.0, 3 * baseline.completed.seconds + 2)
    originals: dict[str, str] = {}
    patches: list[Patch] = []
    tried, stopped = 0, None
    for candidate in candidates:
        if tried >= max_candidates:
            stopped = "candidates"
            break
        if time.monotonic() - start > max_seconds:
            stopped = "seconds"
            break
        if len(patches) >= max_patches:
            break
        tried += 1
        path = sandbox.root / candidate.file
        original = originals.setdefault(candidate.file, path.read_text())
        path.write_text(candidate.text)
        try:
            first = run_tests(sandbox, test_cmd, only=failing, timeout=per_run, stop_early=True)
            if first.problem or any(first.outcomes.get(test) != "passed" for test in failing):
                continue
            full = run_tests(sandbox, test_cmd, timeout=per_run * 2)
            if full.problem or any(full.outcomes.get(test) != "passed" for test in [*failing, *passing]):
                continue
        finally:
            path.write_text(original)
        patches.append(Patch(candidate.file, candidate.line, unified_diff(candidate.file, original, candidate.text),
                             tuple(failing), candidate.size, candidate.source, candidate.operator, candidate.text))
        if progress:
            progress(f"verified: {candidate.operator} at {candidate.file}:{candidate.line}")
    ranks = {(c.file, c.line): c.rank for c in candidates}
    patches.sort(key=lambda p: (p.size, ranks.get((p.file, p.line), 0)))
    return Verification(patches, tried, time.monotonic() - start, stopped)
