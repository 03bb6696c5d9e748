"""Runs the frozen task sets of agents.tasks through an Agent and scores tool choice.

Shared by tests/test_agents_smollm2.py (a sample of the original set, as a check that every step is
valid) and bench/agents.py (whole sets, for the figures). Each set is run with its own tools
(`evaluate(model, tasks, tools=...)`; the original set's by default).

A task is judged on the run's first step: the right tool, and arguments that say what the task says
(string arguments contain the expected words, case aside; numbers equal the expected number; the
calculator's expression evaluates to it). "valid" means every step of the run parsed into a known tool's
call with valid arguments, or a final answer.

Does not: judge final answers, or tasks that need several tools in a row.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from agents.agent import Agent
from agents.builtin import calculator
from agents.steps import Step
from agents.tasks import TASKS, TOOLS, Task
from agents.tools import Tool
from core.chat import ChatModel

__all__ = ["TASKS", "TOOLS", "Outcome", "Task", "evaluate", "run_task", "summary"]


@dataclass
class Outcome:
    task: Task
    steps: list[Step]
    status: str
    seconds: float

    @property
    def valid(self) -> bool:
        return all(step.valid for step in self.steps)

    @property
    def first(self) -> Step | None:
        return self.steps[0] if self.steps else None

    @property
    def right_tool(self) -> bool:
        return self.first is not None and self.first.tool == self.task.tool

    @property
    def right_arguments(self) -> bool:
        return self.right_tool and self.first.valid and all(
            _matches(self.task.tool, name, expected, (self.first.arguments or {}).get(name))
            for name, expected in self.task.arguments.items())


def _matches(tool_name: str, name: str, expected, actual) -> bool:
    if not isinstance(actual, str):
        return actual == expected
    if tool_name == "calculator":
        try:
            return math.isclose(float(calculator(actual)), expected, rel_tol=1e-9)
        except (ValueError, ArithmeticError, TypeError):
            return False
    return str(expected).lower() in actual.lower()


def run_task(model: ChatModel, task: Task, tools: list[Tool] = TOOLS, **agent_options) -> Outcome:
    started = time.perf_counter()
    result = Agent(model, tools, **agent_options).run(task.prompt)
    return Outcome(task, result.steps, result.status, time.perf_counter() - started)


def evaluate(model: ChatModel, tasks: list[Task] = TASKS, workers: int = 1, tools: list[Tool] = TOOLS,
             **agent_options) -> list[Outcome]:
    """Each task in a fresh Agent with `tools`; `workers` > 1 runs tasks in threads, so a local engine decodes
    them as one batch."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda task: run_task(model, task, tools, **agent_options), tasks))


def summary(outcomes: list[Outcome]) -> dict:
    n = len(outcomes)
    steps = [step for outcome in outcomes for step in outcome.steps]
    return {"tasks": n, "steps": len(steps),
            "valid_step_rate": sum(step.valid for step in steps) / max(len(steps), 1),
            "right_tool_rate": sum(o.right_tool for o in outcomes) / n,
            "right_arguments_rate": sum(o.right_arguments for o in outcomes) / n,
            "steps_per_task": len(steps) / n,
            "seconds_per_task": sum(o.seconds for o in outcomes) / n}
