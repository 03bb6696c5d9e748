"""The `llmkit` command as a user runs it: a real process on the embedded model."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test starts the `llmkit` command: a process that imports torch

LLMKIT = Path(sys.executable).parent / "llmkit"  # the console script `make install` puts in the venv


def llmkit(*args, stdin=None, env=None):
    return subprocess.run([str(LLMKIT), *args], input=stdin, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def test_generate_prints_the_greedy_continuation():
    result = llmkit("generate", "The capital of France is", "--max-new-tokens", "6")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_generate_with_chat_template():
    result = llmkit("generate", "What is the capital of France? Answer in one word.", "--chat",
                    "--max-new-tokens", "16")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "<|im_end|>" not in result.stdout


def test_chat_streams_replies_until_exit():
    result = llmkit("chat", "--max-new-tokens", "24", stdin="What is the capital of France?\n/reset\n/exit\n")
    assert result.returncode == 0, result.stderr
    assert "assistant> " in result.stdout and "Paris" in result.stdout
    assert "(new conversation)" in result.stdout


@pytest.mark.parametrize("how", ["flag", "env"])
def test_missing_model_is_one_clear_error(tmp_path, how):
    missing = str(tmp_path / "nope.gguf")
    args = ["--model", missing] if how == "flag" else []
    result = llmkit("generate", "hi", *args, env={"LLMKIT_MODEL": missing} if how == "env" else None)
    assert result.returncode != 0
    assert "nope.gguf" in result.stderr and "not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_model_id_without_internet_says_what_was_tried():
    result = llmkit("generate", "hi", "--model", "some-org/some-model", env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0
    assert "some-org/some-model" in result.stderr and "Hugging Face Hub" in result.stderr
    assert "Traceback" not in result.stderr


def test_env_variable_selects_the_model(smollm2_path, tmp_path):
    link = tmp_path / "my-model.gguf"
    link.symlink_to(smollm2_path)
    result = llmkit("chat", stdin="/exit\n", env={"LLMKIT_MODEL": str(link)})
    assert result.returncode == 0, result.stderr
    assert "my-model.gguf" in result.stdout
