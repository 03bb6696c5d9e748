"""A review: the analyzers on a target, their findings kept to the changed lines (unless all lines are asked),
most severe first, each with its explanation where the model gave one.

This is the pipeline `llmkit review` and the web app share; report.py writes a `Review` out in each format.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from apps.code_review.analyzers import (
    ANALYZERS,
    COMPLEXITY_THRESHOLD,
    DEFAULT_TIMEOUT,
    AnalyzerRun,
    Finding,
    on_changed_lines,
    ordered,
    run_analyzers,
)
from apps.code_review.explain import MAX_EXPLAINED, Explanation, Style, explain_findings
from apps.code_review.inputs import Target

if TYPE_CHECKING:
    from core.chat import ChatModel


@dataclass
class Review:
    """`findings` most severe first; `explanations[i]` the comment on `findings[i]` (None: not explained);
    `hidden` the findings left out because they are not on changed lines."""

    description: str
    files: list[str]
    findings: list[Finding]
    runs: list[AnalyzerRun]
    explanations: list[Explanation | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    diff_aware: bool = False
    hidden: int = 0
    seconds: float = 0.0

    def __post_init__(self):
        if not self.explanations:
            self.explanations = [None] * len(self.findings)
        assert len(self.explanations) == len(self.findings)

    def to_json(self) -> dict:
        return {"version": 1, "target": self.description, "files": len(self.files), "diff_aware": self.diff_aware,
                "hidden_off_diff": self.hidden, "seconds": round(self.seconds, 3),
                "findings": [{**f.to_json(), **({"explanation": e.to_json()} if e else {})}
                             for f, e in zip(self.findings, self.explanations, strict=True)],
                "analyzers": [run.to_json() for run in self.runs], "notes": self.notes}


def review(target: Target, *, all_lines: bool = False, tools: tuple[str, ...] = ANALYZERS,
           complexity: int = COMPLEXITY_THRESHOLD, timeout: float = DEFAULT_TIMEOUT, llm: ChatModel | None = None,
           style: Style = "choose", max_explained: int = MAX_EXPLAINED) -> Review:
    """Run the analyzers on `target`, keep the findings on its changed lines (all of them for a file or folder, or
    with `all_lines`), and explain the first `max_explained` with `llm` (none without one)."""
    start = time.perf_counter()
    runs = run_analyzers(target.root, target.files, tools, timeout, complexity)
    found = ordered([f for run in runs for f in run.findings])
    changed = None if all_lines else target.changed
    kept = on_changed_lines(found, changed)
    explanations = explain_findings(llm, target.root, kept, style, max_explained) if llm is not None else []
    notes = list(target.notes)
    if llm is not None and len(kept) > max_explained:
        notes.append(f"explained: the first {max_explained} of {len(kept)} findings (--max-explained)")
    return Review(target.description, list(target.files), kept, runs, explanations, notes,
                  diff_aware=changed is not None, hidden=len(found) - len(kept),
                  seconds=time.perf_counter() - start)
