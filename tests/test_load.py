"""core.load, the one resolver: a server's URL gives a RemoteLLM (name, key and context length from the arguments,
else the environment), anything else a local LLM; every command and app loads its model through it."""

import socket

import pytest
import torch

from core import LLM, ModelLoadError, RemoteLLM, load, settings

from conftest import SERVED_MODEL, save_tiny_checkpoint

UNUSED_URL = "http://127.0.0.1:9/v1"  # never contacted: the model name is given, so nothing is asked before a request


@pytest.fixture
def clean_env(monkeypatch):
    for variable in (settings.MODEL, settings.MODEL_NAME, settings.MODEL_API_KEY, settings.CONTEXT_LENGTH):
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_a_url_gives_a_remote_model_with_the_given_settings(clean_env):
    remote = load(UNUSED_URL, model_name="big", api_key="secret", context_length=32768)
    assert isinstance(remote, RemoteLLM)
    assert (remote.base_url, remote.name, remote.api_key, remote.context_length) == (
        "http://127.0.0.1:9/v1", "big", "secret", 32768)


def test_the_environment_fills_what_the_arguments_leave_out(clean_env):
    clean_env.setenv(settings.MODEL, UNUSED_URL)
    clean_env.setenv(settings.MODEL_NAME, "from-env")
    clean_env.setenv(settings.MODEL_API_KEY, "env-key")
    clean_env.setenv(settings.CONTEXT_LENGTH, "2048")
    remote = load()
    assert (remote.name, remote.api_key, remote.context_length) == ("from-env", "env-key", 2048)
    remote = load(" ", model_name="flag", api_key="flag-key", context_length=1024)  # blank: the environment's URL
    assert (remote.base_url, remote.name, remote.api_key, remote.context_length) == (
        "http://127.0.0.1:9/v1", "flag", "flag-key", 1024)
    assert load(UNUSED_URL).context_length == 2048
    clean_env.delenv(settings.CONTEXT_LENGTH)
    assert load(UNUSED_URL).context_length == RemoteLLM(UNUSED_URL, model="x").context_length


def test_a_url_without_a_model_name_asks_the_server(clean_env, served_url):
    remote = load(served_url)
    assert remote.name == SERVED_MODEL
    assert "Paris" in remote.generate("The capital of France is", max_new_tokens=6)


def test_a_server_that_cannot_be_reached_is_a_connection_error(clean_env):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(ConnectionError):
        load(f"http://127.0.0.1:{port}/v1")


def test_a_bad_context_length_is_refused(clean_env):
    clean_env.setenv(settings.CONTEXT_LENGTH, "8k")
    with pytest.raises(ValueError, match="LLMKIT_CONTEXT_LENGTH"):
        load(UNUSED_URL)


def test_a_local_model_from_the_argument_or_the_environment(clean_env, tmp_path):
    save_tiny_checkpoint("llama", tmp_path / "tiny")
    llm = load(str(tmp_path / "tiny"), dtype="bfloat16")
    assert isinstance(llm, LLM) and llm.name == "tiny"
    assert next(llm.model.parameters()).dtype == torch.bfloat16
    clean_env.setenv(settings.MODEL, str(tmp_path / "tiny"))
    clean_env.setenv(settings.MODEL_NAME, "ignored-for-local-models")
    renamed = load(model_name="served-as")
    assert renamed.source == tmp_path / "tiny" and renamed.name == "served-as"
    assert load().name == "tiny"


def test_the_local_loader_points_a_url_to_core_load(clean_env):
    with pytest.raises(ModelLoadError, match="server's URL, not a local model: load it with core.load"):
        LLM.load(UNUSED_URL)
