"""The debugger's steps as agent tools, so a capable model can drive the loop itself:
`agents.Agent(llm, tools=code_tools(path))`.

run_tests, localise, read_file, lint and try_patch each work on the project at `path` through a fresh sandbox
copy (sandbox.py), so no tool writes into the project; read_file reads only files inside it and returns a
bounded, numbered slice; try_patch answers "verified" only after the same checks as the pipeline's patches
(repair.verify) and returns the diff to apply. The deterministic pipeline (debug.py) stays the default: these
tools are for a bigger model behind `--model`; the small one is not trusted to plan.

Does not: apply a patch (the caller applies the diff), or run a command other than the test command and ruff.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from agents import Tool, tool
from apps.code_review import testrun
from apps.code_review.localise import localise as rank_lines
from apps.code_review.mutations import Candidate, change_size
from apps.code_review.repair import verify
from apps.code_review.sandbox import Limits, Sandbox

READ_LINES = 200  # at most, per read_file call
READ_CHARS = 20_000
REPORT_CHARS = 4_000  # of a tool's text result


def _inside(root: Path, file: str) -> Path:
    """`file` resolved inside the project; ValueError (the model sees it) for anything outside or missing."""
    path = (root / file).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise ValueError(f"{file!r} is not a file inside the project")
    return path


def _summary(run: testrun.TestRun) -> str:
    if run.problem:
        return f"the tests could not be run: {run.problem}"
    lines = [f"{len(run.failing)} failing, {len(run.passing)} passing"]
    for test in run.failing[:10]:
        message = run.messages.get(test, "").strip().splitlines()
        lines.append(f"FAILED {test}: {' / '.join(message[-3:])[:300]}")
    return "\n".join(lines)[:REPORT_CHARS]


def code_tools(path: str | Path, test_cmd: str = "pytest -q", limits: Limits | None = None,
               max_seconds: float = 60.0) -> list[Tool]:
    """The five tools for the project at `path`, bound to `test_cmd` and the sandbox `limits` (default: a
    60 s wall clock per test run); `max_seconds` bounds try_patch's verification."""
    root = Path(path).resolve()
    limits = limits or Limits(wall_seconds=60.0)
    if not root.is_dir():
        raise ValueError(f"not a folder: {root}")
    timeout = 2 * limits.wall_seconds + max_seconds + 10

    @tool(timeout=timeout)
    def run_tests() -> str:
        """Run the project's tests in a sandbox; say how many fail and pass, and why the failing ones fail."""
        with Sandbox(root, limits) as sandbox:
            return _summary(testrun.run_tests(sandbox, test_cmd))

    @tool(timeout=timeout)
    def localise(top: int = 5) -> str:
        """The lines most likely to hold the bug, from which lines the failing tests ran (one 'file:line score' a line).

        Args:
            top: how many lines to list (1 to 20)
        """
        with Sandbox(root, limits) as sandbox:
            run = testrun.run_tests(sandbox, test_cmd, coverage=True)
            if run.problem or not run.failing:
                return _summary(run)
            ranked = rank_lines(run, sandbox.root, limit=max(1, min(top, 20)))
        return "\n".join(f"{s.file}:{s.line} {s.score:.3f}" for s in ranked) or "no suspicious line"

    @tool(timeout=30)
    def read_file(file: str, start: int = 1, end: int = 60) -> str:
        """Lines `start` to `end` of a file of the project, numbered (at most 200 lines).

        Args:
            file: the path relative to the project
            start: the first line (1-based)
            end: the last line
        """
        lines = _inside(root, file).read_text(errors="replace").splitlines()
        start = max(1, start)
        end = min(len(lines), end, start + READ_LINES - 1)
        return "\n".join(f"{n}: {lines[n - 1]}" for n in range(start, end + 1))[:READ_CHARS]

    @tool(timeout=60)
    def lint(file: str) -> str:
        """Ruff's findings on a file of the project (one 'file:line:col: rule message' a line)."""
        target = _inside(root, file)
        ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
        done = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", str(target)], cwd=root,
                              capture_output=True, text=True, timeout=50)
        if done.returncode == 0:
            return "no findings"
        return done.stdout.replace(str(root) + "/", "").strip()[:REPORT_CHARS] or done.stderr.strip()[:REPORT_CHARS]

    @tool(timeout=timeout)
    def try_patch(file: str, line: int, replacement: str) -> str:
        """Replace one line of a file and run the tests in a sandbox: 'verified' with the diff only if every failing
        test then passes and no passing test breaks; the project itself is not changed.

        Args:
            file: the path relative to the project
            line: the line to replace (1-based)
            replacement: the new line, with its indentation
        """
        source = _inside(root, file).read_text()
        lines = source.splitlines(keepends=True)
        if not 1 <= line <= len(lines):
            raise ValueError(f"{file} has {len(lines)} lines, not {line}")
        old = lines[line - 1]
        new = replacement.rstrip("\r\n") + old[len(old.rstrip("\r\n")):]
        text = "".join([*lines[:line - 1], new, *lines[line:]])
        relative = _inside(root, file).relative_to(root).as_posix()
        try:
            ast.parse(text)
        except SyntaxError as error:
            return f"rejected: the patched file does not parse ({error.msg}, line {error.lineno})"
        with Sandbox(root, limits) as sandbox:
            baseline = testrun.run_tests(sandbox, test_cmd)
            if baseline.problem or not baseline.failing:
                return f"rejected: nothing to fix ({_summary(baseline)})"
            candidate = Candidate(relative, line, text, "model edit", "model", change_size(old, new), 0)
            found = verify(sandbox, baseline, test_cmd, [candidate], 1, max_seconds)
        if not found.patches:
            return "rejected: with this change the failing tests still fail or a passing test breaks"
        patch = found.patches[0]
        return f"verified: fixes {', '.join(patch.fixed_tests)}\n{patch.diff}"[:REPORT_CHARS]

    return [run_tests, localise, read_file, lint, try_patch]
