"""`debug(path)`: run the tests in a sandbox, localise the failure, and find patches the tests accept.

The deterministic pipeline (Agentless-style: localise, generate candidates, validate): one baseline run with
per-test coverage; spectrum-based localisation (localise.py); mutation candidates for the top suspicious lines
in order of suspicion, each line's smallest edits first (mutations.py); each verified in the sandbox
(repair.py). A model, when given, is asked for one-line edits only where no mutation was verified, within what is
left of the time budget: the embedded 135M model rarely writes a fix, and its seconds are better spent by the
operators; a bigger one behind --model adds the fixes no operator makes. Everything runs in a copy: PATH
changes only with apply=True, and then only by the best verified patch.

Does not: report a patch the tests have not accepted, or run anything outside the sandbox.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from apps.code_review.localise import Suspicious, is_test_file, localise
from apps.code_review.mutations import Candidate, mutants
from apps.code_review.repair import Patch, model_candidates, verify
from apps.code_review.sandbox import Limits, Sandbox
from apps.code_review.testrun import run_tests

TOP_LINES = 10  # suspicious lines whose mutations are tried
MAX_SOURCE_BYTES = 200_000  # a file bigger than this is not mutated


@dataclass
class DebugResult:
    """What `debug` found. failing: test ids; passing: how many passed; patches: verified, best first;
    problem: why nothing could be tried (tests that hang or do not run, nothing failing), else None."""

    test_cmd: str
    isolation: str
    failing: list[str] = field(default_factory=list)
    passing: int = 0
    suspicious: list[Suspicious] = field(default_factory=list)
    patches: list[Patch] = field(default_factory=list)
    seconds: float = 0.0
    tried: int = 0
    stopped: str | None = None
    problem: str | None = None
    applied: bool = False
    messages: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"test_cmd": self.test_cmd, "isolation": self.isolation, "failing": self.failing,
                "passing": self.passing, "suspicious": [s.to_json() for s in self.suspicious],
                "patches": [p.to_json() for p in self.patches], "seconds": round(self.seconds, 2),
                "candidates_tried": self.tried, "budget_stopped": self.stopped, "problem": self.problem,
                "applied": self.applied}

    def to_text(self, suspicious: int = 5) -> str:
        """A human-readable report: the failing tests, the top suspicious lines, each verified patch's diff."""
        lines = [f"tests: {self.test_cmd!r} in {self.isolation}",
                 f"{len(self.failing)} failing, {self.passing} passing ({self.seconds:.1f} s)"]
        lines += [f"  FAILED {test}" for test in self.failing[:20]]
        if self.problem:
            lines.append(self.problem)
        if self.suspicious:
            lines.append("suspicious lines:")
            lines += [f"  {s.file}:{s.line}  {s.score:.3f}" for s in self.suspicious[:suspicious]]
        for number, patch in enumerate(self.patches, 1):
            lines.append(f"patch {number} ({patch.source}: {patch.operator}, {patch.size} characters), the tests pass "
                         f"with it:\n{patch.diff}")
        if self.failing and not self.patches and not self.problem:
            budget = f", stopped by the {self.stopped} budget" if self.stopped else ""
            lines.append(f"no verified patch ({self.tried} candidates tried{budget})")
        if self.applied:
            lines.append("applied patch 1")
        return "\n".join(lines)


def debug(path: str | Path, test_cmd: str = "pytest -q", llm=None, max_candidates: int = 200,
          max_seconds: float = 120.0, apply: bool = False, progress: Callable[[str], None] | None = None,
          limits: Limits | None = None, max_patches: int = 3) -> DebugResult:
    """Debug the project at `path` with `test_cmd`; `max_candidates` and `max_seconds` bound the patch search
    (the baseline test run is bounded by `limits.wall_seconds`). `llm`: a chat model for extra candidates.
    `apply`: write the best verified patch into `path`. Raises SandboxError for a path that is not a folder
    or is too big, ValueError for an empty test command."""
    start = time.monotonic()
    root = Path(path).resolve()
    say = progress or (lambda message: None)
    with Sandbox(root, limits or Limits(wall_seconds=max(60.0, max_seconds))) as sandbox:
        result = DebugResult(test_cmd, sandbox.isolation)
        say(f"running {test_cmd!r} in the sandbox ({sandbox.mode})")
        baseline = run_tests(sandbox, test_cmd, coverage=True)
        result.failing, result.passing, result.messages = baseline.failing, len(baseline.passing), baseline.messages
        if baseline.problem:
            result.problem = baseline.problem
        elif not baseline.failing:
            result.problem = "no test fails: nothing to debug"
        else:
            result.suspicious = localise(baseline, sandbox.root)
            say(f"{len(result.failing)} failing, {result.passing} passing; {len(result.suspicious)} suspicious lines")
            if not result.suspicious:
                result.problem = ("no suspicious line: the failing tests ran no line outside the test files that "
                                  "coverage or a traceback shows (localisation needs a pytest command)")
            sources = _sources(sandbox.root, result.suspicious)
            candidates = _mutants(sources, result.suspicious)
            say(f"{len(candidates)} candidate patches from mutation operators")
            found = verify(sandbox, baseline, test_cmd, candidates, max_candidates,
                           max_seconds - (time.monotonic() - start), max_patches, say)
            result.patches, result.tried, result.stopped = found.patches, found.tried, found.stopped
            if llm is not None and not result.patches and result.tried < max_candidates:
                say("asking the model for edits")  # only where no operator helped: a model's time is dear
                failure = "\n".join(list(baseline.messages.values())[:2])
                edits = model_candidates(llm, sources, result.suspicious, failure,
                                         deadline=start + max_seconds)
                found = verify(sandbox, baseline, test_cmd, edits, max_candidates - result.tried,
                               max_seconds - (time.monotonic() - start), max_patches, say)
                result.patches, result.tried = found.patches, result.tried + found.tried
                result.stopped = found.stopped or result.stopped
            if not result.patches:
                say("no verified patch")
    if apply and result.patches:
        best = result.patches[0]
        target = root / best.file
        if target.read_text() != best.base:
            result.problem = f"{best.file} changed during the run: the patch was not applied"
        else:
            target.write_text(best.text)
            result.applied = True
    result.seconds = time.monotonic() - start
    return result


def _sources(root: Path, suspicious: list[Suspicious]) -> dict[str, str]:
    """The text of each file holding one of the top suspicious lines (test files and big files left out)."""
    sources = {}
    for s in suspicious[:TOP_LINES]:
        file = root / s.file
        if s.file not in sources and not is_test_file(s.file) and file.stat().st_size <= MAX_SOURCE_BYTES:
            try:
                sources[s.file] = file.read_text()
            except (OSError, UnicodeDecodeError):
                continue
    return sources


def _mutants(sources: dict[str, str], suspicious: list[Suspicious]) -> list[Candidate]:
    return [c for rank, s in enumerate(suspicious[:TOP_LINES]) if s.file in sources
            for c in mutants(sources[s.file], s.file, s.line, rank)]
