"""Human approval: a call that needs it pauses the run; the pause survives JSON and resumes in a fresh Agent."""

import json

import pytest

from agents import Agent, Decision, PausedRun, ScriptedModel, ToolArgumentError, diff_steps, read_trace, replay, tool

SENT = []


@tool(side_effects=True, requires_approval=True)
def send_email(to: str, body: str) -> str:
    """Send an email.

    Args:
        to: the recipient's address
        body: the text
    """
    SENT.append((to, body))
    return f"sent to {to}"


@tool
def lookup(name: str) -> str:
    """Find a person's email address."""
    return f"{name.lower()}@example.com"


def call(name, /, **arguments):
    return {"tool": name, "arguments": arguments}


def answer(text):
    return call("final_answer", answer=text)


@pytest.fixture(autouse=True)
def outbox():
    SENT.clear()
    yield SENT


def pause(trace=None) -> str:
    """A run that looks up an address, then asks to send: paused, nothing sent; its JSON."""
    model = ScriptedModel([call("lookup", name="Ada"), call("send_email", to="ada@example.com", body="Hi")])
    result = Agent(model, [lookup, send_email]).run("Say hi to Ada", trace=trace)
    assert result.status == "paused" and result.answer is None and not SENT
    assert [s.approval for s in result.steps] == [None, "pending"]
    paused = result.paused
    assert (paused.tool, paused.arguments) == ("send_email", {"to": "ada@example.com", "body": "Hi"})
    return paused.to_json()


def fresh_agent(*outputs):
    """Another Agent, as in another process: only the JSON carries the run over."""
    return Agent(ScriptedModel(outputs or [answer("done")]), [lookup, send_email])


def test_approve_runs_the_call_and_the_run_goes_on():
    agent = fresh_agent()
    result = agent.resume(PausedRun.from_json(pause()), Decision.approve())
    assert SENT == [("ada@example.com", "Hi")]
    assert result.status == "answered" and result.answer == "done" and len(result.steps) == 3
    decided = result.steps[1]
    assert decided.approval == "approved" and decided.observation == "sent to ada@example.com"
    assert agent.model.calls[0].prompt[-1] == {"role": "user",
                                               "content": "Result of send_email: sent to ada@example.com"}


def test_edit_runs_the_call_with_the_new_arguments_and_keeps_the_proposal():
    agent = fresh_agent()
    result = agent.resume(PausedRun.from_json(pause()), Decision.edit({"to": "ada@example.com", "body": "Hello!"}))
    assert SENT == [("ada@example.com", "Hello!")]
    decided = result.steps[1]
    assert decided.approval == "edited" and decided.arguments["body"] == "Hello!"
    assert decided.proposed_arguments == {"to": "ada@example.com", "body": "Hi"}
    assert "a person changed the arguments" in agent.model.calls[0].prompt[-1]["content"]


def test_reject_tells_the_model_why_and_sends_nothing():
    agent = fresh_agent()
    result = agent.resume(PausedRun.from_json(pause()), Decision.reject("not during the holidays"))
    assert SENT == [] and result.status == "answered"
    decided = result.steps[1]
    assert decided.approval == "rejected" and decided.error.kind == "rejected"
    shown = agent.model.calls[0].prompt[-1]["content"]
    assert "a person rejected this call: not during the holidays" in shown


def test_bad_decisions_are_refused_before_anything_runs():
    paused = PausedRun.from_json(pause())
    with pytest.raises(ToolArgumentError, match="body: Field required"):
        fresh_agent().resume(paused, Decision.edit({"to": "x@example.com"}))
    with pytest.raises(ValueError, match="no tool 'send_email' that requires approval"):
        Agent(ScriptedModel([]), [lookup]).resume(paused, Decision.approve())
    with pytest.raises(ValueError, match="a decision is one of"):
        Decision("maybe")
    with pytest.raises(ValueError, match="carries the new arguments"):
        Decision("edit")
    assert SENT == []


def test_the_pause_is_plain_versioned_json():
    text = pause()
    data = json.loads(text)
    assert data["format"] == "llmkit-paused-run" and data["version"] == 1 and data["task"] == "Say hi to Ada"
    assert PausedRun.from_json(text).to_json() == text
    with pytest.raises(ValueError, match="not an llmkit paused run"):
        PausedRun.from_json("{}")
    with pytest.raises(ValueError, match="version 99"):
        PausedRun.from_json(json.dumps({**data, "version": 99}))


def test_invalid_arguments_are_the_models_error_not_a_question_for_a_person():
    model = ScriptedModel([call("send_email", to="ada@example.com"), answer("gave up")])
    result = Agent(model, [send_email]).run("t")
    assert result.status == "answered" and result.steps[0].error.kind == "arguments"
    assert result.steps[0].approval is None


def test_a_paused_and_resumed_run_is_one_trace_that_replays(tmp_path):
    path = tmp_path / "run.jsonl"
    text = pause(trace=path)
    result = fresh_agent(answer("sent")).resume(PausedRun.from_json(text), Decision.edit({"to": "ada@example.com",
                                                                                        "body": "Hey"}))
    kinds = [json.loads(line)["type"] for line in path.read_text().splitlines()]
    assert kinds == ["run", "step", "step", "result", "resume", "step", "step", "result"]
    trace = read_trace(path)
    assert [r["status"] for r in trace.results] == ["paused", "answered"]
    assert trace.decisions == [{"action": "edit", "arguments": {"to": "ada@example.com", "body": "Hey"}, "reason": ""}]
    assert diff_steps(trace.steps, result.steps) == []
    SENT.clear()
    replayed = replay(path, [lookup, send_email])
    assert diff_steps(trace.steps, replayed.steps) == [] and replayed.answer == "sent"
    assert SENT == [("ada@example.com", "Hey")]  # the replay really calls the tools: stand-ins for real side effects
