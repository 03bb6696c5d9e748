"""Candidate patches for suspicious lines, from mutation operators (mutations.py) and optionally a model, verified
in the sandbox before anyone sees them.

A model's candidate is {"file", "line", "replacement"} decoded under a JSON schema that limits the file to the
suspicious files and the line to their suspicious lines; the replacement replaces that whole line.

Verification (`verify`): a candidate is applied in the sandbox copy; the failing tests run first (in the forked
pytest worker, stopping at the first failure, each run bounded by a few times the unmutated run's duration, as a
mutant may loop forever), then the whole suite, as a fresh process, only for survivors; a patch is kept when
every failing test passes and every passing one still does. Nothing unverified is returned. Patches are ranked by
the size of the change (characters), then by how suspicious their line was.

Does not: edit test files, or write into the project (the caller applies a patch).
"""

from __future__ import annotations

import ast
import difflib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from apps.code_review.localise import Suspicious
from apps.code_review.mutations import Candidate, change_size
from apps.code_review.sandbox import Sandbox
from apps.code_review.testrun import TestRun, Worker, pytest_arguments, run_tests


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
    base: str  # the file the patch was made against: applying refuses a file changed since

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "diff": self.diff, "fixed_tests": list(self.fixed_tests),
                "size": self.size, "source": self.source, "operator": self.operator}


# ---- the model's candidates ----


EDIT_PROMPT = """A test fails:
{failure}

The code around line {line} of {file}:
{context}

Line {line} is probably wrong:
{old}
Write line {line} corrected (same indentation), as JSON with "file", "line" and "replacement"."""


def model_candidates(llm, sources: dict[str, str], suspicious: list[Suspicious], failure: str,
                     lines: int = 3, deadline: float | None = None) -> list[Candidate]:
    """One edit from `llm` for each of the `lines` most suspicious lines, greedy, decoded under a schema that
    admits only that file and line and a replacement of bounded length; an edit that does not parse or changes
    nothing is dropped. No call starts after `deadline` (time.monotonic()). (The embedded 135M model rarely writes
    a fix: this is for a bigger model behind --model.)"""
    top = [s for s in suspicious if s.file in sources][:lines]
    found: dict[str, Candidate] = {}
    for rank, target in enumerate(top):
        if deadline is not None and time.monotonic() > deadline:
            break
        text_lines = sources[target.file].splitlines(keepends=True)
        old = text_lines[target.line - 1]
        around = range(max(1, target.line - 4), min(len(text_lines), target.line + 4) + 1)
        context = "\n".join(f"{n}: {text_lines[n - 1].rstrip()}" for n in around)
        schema = {"type": "object", "additionalProperties": False, "required": ["file", "line", "replacement"],
                  "properties": {"file": {"type": "string", "enum": [target.file]},
                                 "line": {"type": "integer", "enum": [target.line]},
                                 "replacement": {"type": "string", "maxLength": min(200, 2 * len(old) + 40)}}}
        prompt = [{"role": "user", "content": EDIT_PROMPT.format(failure=failure[-1500:], line=target.line,
                                                                 file=target.file, context=context, old=old.rstrip())}]
        try:
            edit = json.loads(llm.generate(prompt, json_schema=schema, max_new_tokens=100, temperature=0.0))
            replacement = str(edit["replacement"])
        except (ValueError, KeyError, TypeError):
            continue
        new = replacement.rstrip("\r\n") + old[len(old.rstrip("\r\n")):]
        text = "".join([*text_lines[:target.line - 1], new, *text_lines[target.line:]])
        if text == sources[target.file] or text in found:
            continue
        try:
            ast.parse(text)
        except SyntaxError:
            continue
        found[text] = Candidate(target.file, target.line, text, "model edit", "model", change_size(old, new), rank)
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
    full_timeout = max(5.0, 3 * baseline.completed.seconds + 2)
    originals: dict[str, str] = {}
    patches: list[Patch] = []
    tried, stopped = 0, None
    worker = Worker(sandbox) if pytest_arguments(test_cmd) is not None and candidates else None
    try:
        # A mutant may loop forever: bound each screening run by a few times the unmutated one's duration.
        calibration = run_tests(sandbox, test_cmd, only=failing, timeout=full_timeout, stop_early=True, worker=worker)
        per_run = min(full_timeout, max(1.0, 4 * calibration.completed.seconds + 0.5))
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
                first = run_tests(sandbox, test_cmd, only=failing, timeout=per_run, stop_early=True, worker=worker)
                if first.problem or any(first.outcomes.get(test) != "passed" for test in failing):
                    continue
                full = run_tests(sandbox, test_cmd, timeout=full_timeout)
                if full.problem or any(full.outcomes.get(test) != "passed" for test in [*failing, *passing]):
                    continue
            finally:
                path.write_text(original)
            patches.append(Patch(candidate.file, candidate.line, unified_diff(candidate.file, original, candidate.text),
                                 tuple(failing), candidate.size, candidate.source, candidate.operator, candidate.text,
                                 original))
            if progress:
                progress(f"verified: {candidate.operator} at {candidate.file}:{candidate.line}")
    finally:
        if worker is not None:
            worker.close()
    ranks = {(c.file, c.line): c.rank for c in candidates}
    patches.sort(key=lambda p: (p.size, ranks.get((p.file, p.line), 0)))
    return Verification(patches, tried, time.monotonic() - start, stopped)
