"""apps.common, what every app starts from: settings from flags over the LLMKIT_* environment, input limits,
uploads checked against them, the chat turns a model is sent, and an agent's steps as chat messages."""

import argparse

import pytest

from agents import Agent, ScriptedModel, calculator
from apps.common import (
    LIMITS,
    AppSettings,
    Limits,
    ModelSwitch,
    add_app_flags,
    agent_messages,
    chat_turns,
    check_uploads,
)
from core import ModelLoadError
from rag.answer import MAX_QUESTION_CHARS

from conftest import save_tiny_checkpoint


def parse(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_app_flags(parser, port=7000)
    return parser.parse_args(flags)


def test_settings_take_the_flags_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMKIT_HOME", str(tmp_path / "from-env"))
    settings = AppSettings.from_args(parse())
    assert settings.data_dir == tmp_path / "from-env" and settings.port == 7000 and settings.host == "127.0.0.1"
    assert (settings.model, settings.dtype) == (None, "auto")  # core.load reads LLMKIT_MODEL when it loads
    settings = AppSettings.from_args(parse("--data-dir", str(tmp_path / "flag"), "--port", "0", "--model", "m.gguf",
                                           "--dtype", "bfloat16"))
    assert (settings.data_dir, settings.port, settings.model, settings.dtype) == (tmp_path / "flag", 0, "m.gguf",
                                                                                  "bfloat16")
    with pytest.raises(ValueError, match="--port 70000 is not a TCP port"):
        AppSettings.from_args(parse("--port", "70000"))


def test_settings_load_the_model_they_name(tmp_path):
    save_tiny_checkpoint("llama", tmp_path / "tiny")
    assert AppSettings(model=str(tmp_path / "tiny")).load_model().name == "tiny"
    with pytest.raises(ModelLoadError):
        AppSettings(model=str(tmp_path / "missing.gguf")).load_model()


def test_the_question_limit_is_rags():
    assert LIMITS.question_chars == MAX_QUESTION_CHARS
    assert Limits(question_chars=500).question_chars == 500
    with pytest.raises(ValueError, match=f"question_chars must be 1 to {MAX_QUESTION_CHARS}"):
        Limits(question_chars=MAX_QUESTION_CHARS + 1)


def test_uploads_over_the_limits_are_refused_one_line_each(tmp_path):
    small, notes, big = tmp_path / "small.pdf", tmp_path / "notes.docx", tmp_path / "big.pdf"
    small.write_bytes(b"%PDF-1.7")
    notes.write_bytes(b"PK\x03\x04")
    with big.open("wb") as file:
        file.truncate(3 * 2**20)
    accepted, refused = check_uploads([small, notes, big], Limits(upload_mb=2))
    assert accepted == [small]
    assert refused == ["- **notes.docx**: error: unsupported type; upload .htm, .html, .markdown, .md, .pdf, .txt",
                       "- **big.pdf**: error: 3 MB; the limit is 2 MB per file"]
    assert check_uploads([tmp_path / "gone.pdf"]) == ([], ["- **gone.pdf**: error: the uploaded file is gone; upload "
                                                          "it again"])
    assert check_uploads([small] * 3, Limits(files_per_upload=2)) == (
        [], ["**Too many files:** 3 at once; the limit is 2 per upload."])


def test_chat_turns_are_the_last_plain_pairs():
    history = []
    for n in range(5):
        history += [{"role": "user", "content": f"q{n}"},
                    {"role": "assistant", "content": "a step", "metadata": {"title": "🔧 search_documents()"}},
                    {"role": "assistant", "content": f"a{n}"}]
    assert [m["content"] for m in chat_turns(history, Limits(history_turns=2))] == ["q3", "a3", "q4", "a4"]


def test_agent_steps_become_chat_messages_as_they_happen():
    model = ScriptedModel([{"tool": "calculator", "arguments": {"expression": "2 + 3"}}, "not a step"])
    updates = list(agent_messages(Agent(model, [calculator], max_steps=2).stream("What is 2 + 3?")))
    assert [len(update) for update in updates] == [1, 2, 3]
    first, invalid, stopped = updates[-1]
    assert first == {"role": "assistant", "content": "5", "metadata": {"title": "🔧 calculator(expression='2 + 3')"}}
    assert invalid["metadata"] == {"title": "⚠️ invalid step"} and invalid["content"]
    assert stopped == {"role": "assistant", "content": "The agent stopped before it found an answer (step limit "
                                                       "reached)."}
    model = ScriptedModel([{"tool": "final_answer", "arguments": {"answer": "5"}}])
    assert list(agent_messages(Agent(model, [calculator]).stream("What is 2 + 3?"))) == [
        [{"role": "assistant", "content": "5"}]]


def test_the_model_switch_is_off_unless_the_flags_allow_it():
    assert AppSettings.from_args(parse()).model_switch() == ModelSwitch(allowed=False, urls=())
    assert AppSettings.from_args(parse("--allow-host", "a.example", "--allow-host", "b")).allow_hosts == ["a.example",
                                                                                                          "b"]
    url = "http://models.example:8000/v1"
    policy = AppSettings.from_args(parse("--allow-model-switch", "--allow-model-url", url, "--allow-model-url",
                                         "https://other.example/v1")).model_switch()
    assert policy == ModelSwitch(allowed=True, urls=(url, "https://other.example/v1"))
    assert policy.refusal("HTTP://Models.Example:8000/v1/".lower()) is None and policy.refusal("my.gguf") is None
    for spec in ("http://models.example:8000@evil.example/v1", "http://models.example:8001/v1",
                 "https://models.example:8000/v1", "http://models.example:8000/v1?x=1"):
        assert "is not one of the servers the operator allowed" in policy.refusal(spec), spec
    assert "--allow-model-switch" in ModelSwitch().refusal("my.gguf")
    with pytest.raises(ValueError, match="add --allow-model-switch"):
        AppSettings.from_args(parse("--allow-model-url", url)).model_switch()
    with pytest.raises(ValueError, match="'models.example' is not a server's URL"):
        ModelSwitch(allowed=True, urls=("models.example",))
