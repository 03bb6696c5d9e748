"""The `llmkit` command as a user runs it: a real process, on the embedded model or through a server's URL."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SERVED_MODEL

pytestmark = pytest.mark.slow  # every test starts the `llmkit` command: a process that imports torch

LLMKIT = Path(sys.executable).parent / "llmkit"  # the console script `make install` puts in the venv
SRX = "nist-srx-proxy-protocol-3.0.pdf"


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
    """The question is one the 135M model answers with a clear margin (its first token 0.34 against 0.08): "What is
    the capital of France?" is a near-tie (0.15 against 0.14) that a change of rounding flips."""
    result = llmkit("chat", "--max-new-tokens", "24", stdin="Name the capital of France.\n/reset\n/exit\n")
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


# --- --model URL: every command through an OpenAI-compatible server (`llmkit serve`'s app on loopback) -------------

def closed_port_url() -> str:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{closed.getsockname()[1]}/v1"


def test_generate_through_a_server_url(served_url):
    result = llmkit("generate", "The capital of France is", "--max-new-tokens", "6", "--model", served_url)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_chat_through_a_server_url_from_the_environment(served_url):
    result = llmkit("chat", "--max-new-tokens", "24", stdin="Name the capital of France.\n/exit\n",
                    env={"LLMKIT_MODEL": served_url, "LLMKIT_MODEL_NAME": SERVED_MODEL})
    assert result.returncode == 0, result.stderr
    assert f"llmkit chat with {SERVED_MODEL} at {served_url}" in result.stdout
    assert "assistant> " in result.stdout and "Paris" in result.stdout


def test_ask_through_a_server_url(served_url, demo_data_dir, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(demo_data_dir, home)
    result = llmkit("ask", "demo", "What port does the SRx server listen on?", "--k", "2", "--max-new-tokens", "24",
                    "--json", "--data-dir", str(home), "--model", served_url, "--model-name", SERVED_MODEL,
                    "--api-key", "unused")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["answer"] and [s["file"] for s in answer["sources"]] == [SRX, SRX]


def test_a_model_name_the_server_lacks_is_one_line(served_url):
    result = llmkit("generate", "hi", "--model", served_url, "--model-name", "gpt-4o")
    assert result.returncode == 1
    assert result.stderr.startswith("llmkit: ") and "'gpt-4o' does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["generate", "hi"], ["chat"], ["pdf-chat", "--port", "0"]])
def test_a_server_that_cannot_be_reached_is_one_line(command):
    url = closed_port_url()
    result = llmkit(*command, "--model", url, stdin="hi\n/exit\n")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("llmkit: ") and url in last, result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_server_url():
    result = llmkit("serve", "--model", "http://127.0.0.1:8000/v1")
    assert result.returncode == 1
    assert "serving a remote model is not supported" in result.stderr and "Traceback" not in result.stderr


# --- output for scripts: `llmkit search --json`, a pipe closed early --------------------------------------------------

SRX_QUESTION = "What port does the SRx server listen on?"


@pytest.fixture
def demo_home(demo_data_dir, tmp_path):
    """A copy of the demo data dir: a search saves the collection's BM25 index in it."""
    home = tmp_path / "home"
    shutil.copytree(demo_data_dir, home)
    return home


def test_search_json_is_json_alone_with_every_score(demo_home):
    for run in ("builds the BM25 index", "loads it"):
        result = llmkit("search", "demo", SRX_QUESTION, "--k", "4", "--json", "--data-dir", str(demo_home))
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", (run, result.stderr)  # no model-loading bars, no library warnings
        sources = json.loads(result.stdout)["sources"]
        assert len(sources) == 4 and sources[0]["file"] == SRX
        assert all(s["score"] > 0 and (s["dense_score"] is not None or s["bm25_score"] is not None) for s in sources)
        assert (demo_home / "collections" / "demo" / "bm25.npz").is_file(), run


@pytest.mark.parametrize("output", ["--json", "text"])
def test_a_reader_that_stops_early_ends_search_quietly(demo_home, output):
    """`llmkit search ... | head -c 10`: the reader goes away; the command stops without a traceback."""
    flags = ["--json"] if output == "--json" else []
    process = subprocess.Popen([str(LLMKIT), "search", "demo", SRX_QUESTION, "--k", "20", *flags, "--data-dir",
                                str(demo_home)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # before the command writes: its first write finds no reader
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) != 0  # not everything was written
    assert stderr == ""
    piped = subprocess.run(f"'{LLMKIT}' search demo 'SRx' --k 100 --json --data-dir '{demo_home}' | head -c 10",
                           shell=True, capture_output=True, text=True, timeout=300)
    assert piped.stdout == '{"sources"' and piped.stderr == ""
