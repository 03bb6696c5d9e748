"""Spectrum-based fault localisation: which lines the failing tests ran and the passing ones did not.

Each line executed by some test gets Ochiai's score, ef / sqrt(F * (ef + ep)) (ef, ep: failing and passing tests
that ran it; F: all failing tests), from per-test coverage (testrun's coverage contexts). The failing tests'
traceback frames are a prior: a line is weighted 1 by a failing test whose innermost frame outside the test
files is that line, 0.5 if it is elsewhere in that traceback, and the prior is the mean weight over the failing
tests. The score is 0.7 * Ochiai + 0.3 * prior, so the spectrum decides and the traceback breaks its ties (all
lines of a function only the failing tests call have Ochiai 1) and still ranks a line when coverage is missing.
Remaining ties go to the later line of the same file (the statement nearer the result that was wrong).

Does not: score test files (test_*.py, *_test.py, conftest.py, tests/ folders) — the tests are the oracle —
or lines no failing test ran.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from coverage import CoverageData

from apps.code_review.testrun import TestRun

SPECTRUM_WEIGHT, PRIOR_WEIGHT = 0.7, 0.3


@dataclass(frozen=True)
class Suspicious:
    """A line (1-based) of a file (relative to the project, posix) and how suspicious it is, in [0, 1]."""

    file: str
    line: int
    score: float

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "score": round(self.score, 4)}


def is_test_file(path: str) -> bool:
    parts = PurePosixPath(path).parts
    name = parts[-1]
    return (name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py"
            or any(part in ("tests", "test") for part in parts[:-1]))


def spectrum(run: TestRun, root: Path) -> dict[tuple[str, int], tuple[int, int]]:
    """(file, line) -> (failing tests that ran it, passing tests that ran it), for the project's non-test files."""
    if run.coverage is None:
        return {}
    data = CoverageData(basename=str(run.coverage))
    data.read()
    failing, passing = set(run.failing), set(run.passing)
    counts = {}
    for measured in data.measured_files():
        path = Path(measured)
        if not path.is_relative_to(root) or not measured.endswith(".py"):
            continue
        file = path.relative_to(root).as_posix()
        if is_test_file(file):
            continue
        for line, contexts in (data.contexts_by_lineno(measured) or {}).items():
            ef = sum(1 for context in set(contexts) if context in failing)
            ep = sum(1 for context in set(contexts) if context in passing)
            if ef or ep:
                counts[(file, line)] = (ef, ep)
    return counts


def traceback_prior(run: TestRun) -> dict[tuple[str, int], float]:
    """(file, line) -> mean weight over the failing tests (see the module docstring)."""
    failing = run.failing
    weights: dict[tuple[str, int], float] = defaultdict(float)
    for test in failing:
        frames = [frame for frame in run.frames.get(test, []) if not is_test_file(frame[0])]
        mine: dict[tuple[str, int], float] = {}
        for index, frame in enumerate(frames):
            mine[frame] = max(mine.get(frame, 0.0), 1.0 if index == len(frames) - 1 else 0.5)
        for frame, weight in mine.items():
            weights[frame] += weight / len(failing)
    return dict(weights)


def localise(run: TestRun, root: Path, limit: int = 50) -> list[Suspicious]:
    """The `limit` most suspicious lines, most suspicious first; [] when no test fails."""
    failing = len(run.failing)
    if not failing:
        return []
    counts, prior = spectrum(run, root), traceback_prior(run)
    scores = {}
    for key in set(counts) | set(prior):
        ef, ep = counts.get(key, (0, 0))
        ochiai = ef / math.sqrt(failing * (ef + ep)) if ef else 0.0
        score = SPECTRUM_WEIGHT * ochiai + PRIOR_WEIGHT * prior.get(key, 0.0)
        if score > 0:
            scores[key] = score
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0][0], -item[0][1]))
    return [Suspicious(file, line, score) for (file, line), score in ranked[:limit]]
