"""A fixed task set for tool choice, with the tool and arguments each task calls for, and a scorer.

Shared by tests/test_agents_smollm2.py (a sample, as a check that every step is valid) and
bench/agents.py (all of it, for the figures). Four tools, stand-ins except the calculator, so scoring
runs offline and nothing is sent: `get_weather` and `search_documents` return canned text,
`send_email` requires approval (the run pauses after the call, which is what is scored).

A task is judged on the run's first step: the right tool, and arguments that say what the task says
(string arguments contain the expected words, case aside; the calculator's expression evaluates to
the expected number). "valid" means every step of the run parsed into a known tool's call with valid
arguments, or a final answer.

Does not: judge final answers, or tasks that need several tools in a row.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from agents.agent import Agent
from agents.builtin import calculator
from agents.steps import Step
from agents.tools import FINAL_ANSWER, tool
from core.chat import ChatModel


@tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> str:
    """Get the current weather in a city.

    Args:
        city: the name of the city
        unit: the temperature unit
    """
    return f"{city}: 18 degrees {unit}, light rain"


@tool
def search_documents(query: str) -> str:
    """Search the company's documents and return the passages that match.

    Args:
        query: the words to search for
    """
    return f"[1] handbook.pdf, page 3: ... {query} ..."


@tool(side_effects=True, requires_approval=True)
def send_email(to: str, subject: str, body: str) -> str:
    """Send an email.

    Args:
        to: the recipient's email address
        subject: the subject line
        body: the text of the email
    """
    return f"sent to {to}"


TOOLS = [calculator, get_weather, search_documents, send_email]


@dataclass(frozen=True)
class Task:
    prompt: str
    tool: str
    arguments: dict = field(default_factory=dict)  # the expected values of some arguments


TASKS = [
    Task("What is 17 times 23?", "calculator", {"expression": 391}),
    Task("Compute 1234 + 5678.", "calculator", {"expression": 6912}),
    Task("What is 15% of 80?", "calculator", {"expression": 12}),
    Task("Divide 144 by 12.", "calculator", {"expression": 12}),
    Task("What is 2 to the power of 10?", "calculator", {"expression": 1024}),
    Task("What is the square root of 81?", "calculator", {"expression": 9}),
    Task("Calculate (3 + 4) * 5.", "calculator", {"expression": 35}),
    Task("How much is 100 minus 37?", "calculator", {"expression": 63}),
    Task("What's the weather in Paris?", "get_weather", {"city": "Paris"}),
    Task("Is it raining in London right now?", "get_weather", {"city": "London"}),
    Task("Tell me the temperature in Tokyo in fahrenheit.", "get_weather", {"city": "Tokyo", "unit": "fahrenheit"}),
    Task("How cold is it in Oslo today?", "get_weather", {"city": "Oslo"}),
    Task("Weather forecast for Berlin, please.", "get_weather", {"city": "Berlin"}),
    Task("Do I need an umbrella in Seattle today?", "get_weather", {"city": "Seattle"}),
    Task("What is the temperature in Madrid in celsius?", "get_weather", {"city": "Madrid", "unit": "celsius"}),
    Task("How hot is it in Cairo?", "get_weather", {"city": "Cairo"}),
    Task("Find what our documents say about the refund policy.", "search_documents", {"query": "refund"}),
    Task("Search the documents for the installation guide.", "search_documents", {"query": "installation"}),
    Task("What does the user guide say about entropy estimation?", "search_documents", {"query": "entropy"}),
    Task("Look up the warranty terms in our documents.", "search_documents", {"query": "warranty"}),
    Task("Search our files for the password reset procedure.", "search_documents", {"query": "password"}),
    Task("Find the section on data retention in the documents.", "search_documents", {"query": "retention"}),
    Task("What do the company documents say about vacation days?", "search_documents", {"query": "vacation"}),
    Task("Send an email to alice@example.com saying the meeting is at 3pm.", "send_email",
         {"to": "alice@example.com"}),
    Task("Email bob@example.com with the subject 'Report' and tell him the report is ready.", "send_email",
         {"to": "bob@example.com", "subject": "report"}),
    Task("Write an email to carol@example.org that the invoice was paid.", "send_email",
         {"to": "carol@example.org"}),
    Task("Send dave@example.com a thank-you email.", "send_email", {"to": "dave@example.com"}),
    Task("Email team@example.com that the server is back up.", "send_email", {"to": "team@example.com"}),
    Task("Say hello.", FINAL_ANSWER),
    Task("What is your name?", FINAL_ANSWER),
    Task("Thank you, that's all.", FINAL_ANSWER),
    Task("Translate 'good morning' into French.", FINAL_ANSWER),
]


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


def run_task(model: ChatModel, task: Task, **agent_options) -> Outcome:
    started = time.perf_counter()
    result = Agent(model, TOOLS, **agent_options).run(task.prompt)
    return Outcome(task, result.steps, result.status, time.perf_counter() - started)


def evaluate(model: ChatModel, tasks: list[Task] = TASKS, workers: int = 1, **agent_options) -> list[Outcome]:
    """Each task in a fresh Agent; `workers` > 1 runs tasks in threads, so a local engine decodes them as one batch."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda task: run_task(model, task, **agent_options), tasks))


def summary(outcomes: list[Outcome]) -> dict:
    n = len(outcomes)
    steps = [step for outcome in outcomes for step in outcome.steps]
    return {"tasks": n, "steps": len(steps),
            "valid_step_rate": sum(step.valid for step in steps) / max(len(steps), 1),
            "right_tool_rate": sum(o.right_tool for o in outcomes) / n,
            "right_arguments_rate": sum(o.right_arguments for o in outcomes) / n,
            "steps_per_task": len(steps) / n,
            "seconds_per_task": sum(o.seconds for o in outcomes) / n}
