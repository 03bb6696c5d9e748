"""Isolated tools: run in a new process that the timeout kills with everything it started; values, errors, refusals.

The tools are defined at the top level: the child process imports this module to find them.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import create_model

from agents import Agent, ScriptedModel, ToolDefinitionError, ToolFailed, ToolTimeout, tool
from agents.isolation import ChildError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc")

Shape = create_model("Form", side=(int, ...))  # pickle looks for "Form" in this module and does not find it


@tool(isolated=True, timeout=0.5)
def hang(pid_file: str) -> str:
    """Write this process's id to pid_file, then never return."""
    Path(pid_file).write_text(str(os.getpid()))
    while True:
        time.sleep(1)


@tool(isolated=True, timeout=0.5)
def spawn_and_hang(pid_file: str) -> str:
    """Start a grandchild `sleep 1000`, write its id to pid_file, then never return."""
    grandchild = subprocess.Popen(["sleep", "1000"])
    Path(pid_file).write_text(str(grandchild.pid))
    while True:
        time.sleep(1)


@tool(isolated=True, timeout=30)
def square(x: int) -> dict:
    """Square x, reporting which process did it."""
    return {"square": x * x, "pid": os.getpid()}


@tool(isolated=True, timeout=30)
async def halve(x: float) -> float:
    """Halve x, asynchronously."""
    return x / 2


@tool(isolated=True, timeout=30)
def explode(x: int) -> int:
    """Raise."""
    raise KeyError(f"no entry {x}")


@tool(isolated=True, timeout=30)
def unsendable() -> object:
    """Return what cannot be pickled."""
    return (line for line in "ab")


@tool(isolated=True, timeout=30)
def area(shape: Shape) -> int:
    """The area of a square."""
    return shape.side ** 2


def children() -> set[int]:
    """This process's children that are still running (a zombie is not), from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):  # exited while we looked
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (one left to an init that does not reap is not running)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not running(pid)


@pytest.mark.parametrize("hanging", [hang, spawn_and_hang])
def test_a_tool_that_never_returns_is_killed_at_its_timeout_with_all_it_started(hanging, tmp_path):
    before = children()
    pid_file = tmp_path / "pid"
    with pytest.raises(ToolTimeout, match=f"{hanging.name} did not finish within 0.5 s; its process was killed"):
        hanging.run({"pid_file": str(pid_file)})
    pid = int(pid_file.read_text())
    assert pid != os.getpid() and gone(pid)
    assert children() <= before


def test_the_timeout_reaches_the_agent_as_data_and_the_run_goes_on(tmp_path):
    before = children()
    model = ScriptedModel([{"tool": "spawn_and_hang", "arguments": {"pid_file": str(tmp_path / "pid")}},
                           {"tool": "final_answer", "arguments": {"answer": "it hung"}}])
    result = Agent(model, [spawn_and_hang]).run("Start the server.")
    step = result.steps[0]
    assert step.error.kind == "timeout" and "its process was killed" in step.observation
    assert result.answer == "it hung" and gone(int((tmp_path / "pid").read_text())) and children() <= before


def test_values_and_exceptions_cross_back():
    before = children()
    value = square.run({"x": 7})
    assert value["square"] == 49 and value["pid"] != os.getpid()
    assert halve.run({"x": 3}) == 1.5
    with pytest.raises(ToolFailed, match="KeyError: 'no entry 4'") as raised:
        explode.run({"x": 4})
    cause = raised.value.__cause__
    assert isinstance(cause, ChildError) and cause.type_name == "KeyError" and "in explode" in cause.child_traceback
    with pytest.raises(ToolFailed, match=r"TypeError: the result \(generator\) cannot be pickled"):
        unsendable.run({})
    assert children() <= before


def test_what_cannot_cross_to_a_new_process_is_refused_clearly():
    def local(x: int) -> int:
        """Defined inside a test."""
        return x

    with pytest.raises(ToolDefinitionError, match="not inside a function and not as a lambda"):
        tool(local, isolated=True)
    with pytest.raises(ToolDefinitionError, match=r"argument 'shape' \(Form\) cannot be pickled"):
        area.run({"shape": {"side": 2}})
    renamed = tool(square.function, name="renamed", isolated=True)
    assert renamed.run({"x": 2})["square"] == 4  # found under its own name, whatever the tool is called
