"""Human approval: a call of a tool marked `requires_approval` pauses the run until a person decides.

The pause is a `PausedRun`: plain data (the conversation, the run's steps, the time spent) that
serialises to JSON, so the run can be resumed hours later, in another process, by another `Agent`
with the same tools: `agent.resume(PausedRun.from_json(text), Decision.approve())`. A `Decision`
approves the call, edits its arguments (they are validated again, and the step records what the model
had proposed) or rejects it (the model is told, with the person's reason, and the run goes on).

Does not: store the pause anywhere (the caller keeps the JSON: the email bot keeps it in its ledger),
check who decided, or expire pauses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agents.steps import Step

PAUSE_FORMAT = "llmkit-paused-run"
PAUSE_VERSION = 1
ACTIONS = ("approve", "edit", "reject")


@dataclass
class Decision:
    action: str  # one of ACTIONS
    arguments: dict | None = None  # the edited arguments, for "edit"
    reason: str = ""  # told to the model, for "reject"

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(f"a decision is one of {ACTIONS}, got {self.action!r}")
        if (self.action == "edit") != isinstance(self.arguments, dict):
            raise ValueError("an 'edit' decision carries the new arguments as a dict, and only an edit does")

    @classmethod
    def approve(cls) -> Decision:
        return cls("approve")

    @classmethod
    def edit(cls, arguments: dict) -> Decision:
        return cls("edit", arguments)

    @classmethod
    def reject(cls, reason: str = "") -> Decision:
        return cls("reject", reason=reason)


@dataclass
class PausedRun:
    """A run waiting for a decision on its last step's call (`tool`, `arguments`)."""

    task: str
    messages: list[dict]  # the whole conversation (earlier turns too), ending with the call awaiting approval
    steps: list[Step]  # this run's steps; the last one awaits approval
    seconds: float  # run time before the pause
    trace: str | None = None  # the trace file the run writes to, if any; resuming appends to it

    def __post_init__(self):
        if not self.steps or self.steps[-1].approval != "pending":
            raise ValueError("not a paused run: its last step does not await approval")

    @property
    def tool(self) -> str:
        return self.steps[-1].tool

    @property
    def arguments(self) -> dict:
        return self.steps[-1].arguments

    def to_json(self) -> str:
        return json.dumps({"format": PAUSE_FORMAT, "version": PAUSE_VERSION, "task": self.task,
                           "messages": self.messages, "steps": [step.to_dict() for step in self.steps],
                           "seconds": self.seconds, "trace": self.trace}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> PausedRun:
        """Raises ValueError for text that is not a paused run of this version."""
        data: Any = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != PAUSE_FORMAT:
            raise ValueError("not an llmkit paused run (no 'format': 'llmkit-paused-run')")
        if data.get("version") != PAUSE_VERSION:
            raise ValueError(f"paused run version {data.get('version')!r}; this llmkit reads version {PAUSE_VERSION}")
        return cls(data["task"], data["messages"], [Step.from_dict(step) for step in data["steps"]],
                   data["seconds"], data["trace"])
