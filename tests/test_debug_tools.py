"""The debugger's tools driven by an agent (a scripted model): run_tests, localise, read_file, lint, try_patch."""

import pytest

from agents import Agent, ScriptedModel
from apps.code_review.tools import code_tools

SOURCE = "import os\n\n\ndef is_adult(age):\n    return age > 18\n"
TESTS = ("from people import is_adult\n\n\ndef test_adult():\n    assert is_adult(30)\n\n\n"
         "def test_eighteen():\n    assert is_adult(18)\n")


def call(name, /, **arguments):
    return {"tool": name, "arguments": arguments}


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "people"
    folder.mkdir()
    (folder / "people.py").write_text(SOURCE)
    (folder / "test_people.py").write_text(TESTS)
    return folder


@pytest.mark.slow  # four sandboxed test runs: ~5 s
def test_an_agent_drives_the_debugging_tools(project):
    model = ScriptedModel([
        call("run_tests"),
        call("localise", top=3),
        call("read_file", file="people.py", start=4, end=5),
        call("read_file", file="../outside.py"),
        call("lint", file="people.py"),
        call("try_patch", file="people.py", line=5, replacement="    return age < 18"),
        call("try_patch", file="people.py", line=5, replacement="    return age >= 18"),
        call("final_answer", answer="people.py:5 should be >="),
    ])
    tools = code_tools(project)
    assert [t.name for t in tools] == ["run_tests", "localise", "read_file", "lint", "try_patch"]
    result = Agent(model, tools, max_steps=10).run("Fix the failing test.")
    assert result.status == "answered"
    steps = {(s.tool, s.index): s for s in result.steps}
    observations = [s.observation or s.error for s in result.steps]
    assert observations[0].startswith("1 failing, 1 passing\nFAILED test_people.py::test_eighteen")
    assert observations[1].splitlines()[0].startswith("people.py:5 ")
    assert observations[2] == "4: def is_adult(age):\n5:     return age > 18"
    assert steps[("read_file", 4)].error and "not a file inside the project" in str(steps[("read_file", 4)].error)
    assert observations[4].startswith("people.py:1:8: F401")
    assert observations[5].startswith("rejected")
    assert observations[6].startswith("verified: fixes test_people.py::test_eighteen")
    assert "+    return age >= 18" in observations[6]
    assert (project / "people.py").read_text() == SOURCE  # the tools never write into the project
