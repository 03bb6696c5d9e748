"""Cache entries (core.disk_cache) are published whole and flushed to disk, checked against their manifest before
use, and rebuilt with a warning when they fail it; the converted-model cache is one (the ONNX cache: test_embeddings).
"""

import json
import os
import sys

import pytest
import torch
from gguf import GGMLQuantizationType as Q

from core import disk_cache, settings
from core.loading import load_model

from conftest import tiny_bpe_tokenizer, tiny_hf_model
from gguf_files import write_gguf


@pytest.fixture
def converted(tmp_path, monkeypatch):
    """(a tiny GGUF, its output weights, its converted cache entry), in a cache of this test's own.

    The weights are copied: a loaded model's float32 tensors map the cache file, which the tests truncate."""
    monkeypatch.setenv(settings.CACHE, str(tmp_path / "cache"))
    tokenizer = tiny_bpe_tokenizer()
    path = write_gguf(tmp_path / "tiny.gguf", "llama", tiny_hf_model("llama", tokenizer.get_vocab_size()), tokenizer,
                      Q.Q8_0)
    model, _, _ = load_model(str(path))
    [entry] = settings.cache_dir("converted").iterdir()
    return path, model.output.weight.clone(), entry


def reloaded_with_warning(path, output, match):
    with pytest.warns(UserWarning, match=match):
        again, tokenizer, _ = load_model(str(path))
    assert torch.equal(again.output.weight, output)
    assert tokenizer.encode("the quick brown fox")


def test_a_converted_entry_lists_its_files_in_a_manifest(converted):
    _, _, entry = converted
    files = json.loads((entry / disk_cache.MANIFEST).read_text())["files"]
    assert set(files) == {"model_config.json", "tokenizer.json", "tokenizer_config.json", "weights.safetensors"}
    assert all(files[name]["size"] == (entry / name).stat().st_size for name in files)
    assert disk_cache.check(entry) is None
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # no staging folder left behind


def test_a_truncated_converted_cache_is_rebuilt_with_a_warning(converted):
    path, output, entry = converted
    weights = entry / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    reloaded_with_warning(path, output, r"weights\.safetensors is \d+ bytes, the manifest says \d+\); building it")
    assert disk_cache.check(entry) is None
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]


def test_a_converted_entry_without_a_manifest_is_rebuilt(converted):
    """What an interrupted write, or a copy made without the manifest, leaves."""
    path, output, entry = converted
    (entry / disk_cache.MANIFEST).unlink()
    reloaded_with_warning(path, output, "no manifest")


def test_changed_bytes_of_the_same_size_are_found_by_their_hash(converted):
    path, output, entry = converted
    config = entry / "model_config.json"
    before = config.stat()
    config.write_text(config.read_text().replace('"n_layers": 2', '"n_layers": 9'))  # the same length
    os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # as a write moves it, whatever the clock
    reloaded_with_warning(path, output, r"model_config\.json does not match the SHA-256")


def test_an_unchanged_file_is_not_hashed(converted, monkeypatch):
    """Size and mtime as recorded: no hash, so a cached start does not read the weights twice."""
    path, _, _ = converted

    def no_hashing(path):
        raise AssertionError(f"hashed {path}")

    monkeypatch.setattr(disk_cache, "_sha256", no_hashing)
    load_model(str(path))


def test_a_failed_build_leaves_no_entry_and_no_staging_folder(tmp_path):
    def broken(folder):
        (folder / "half.bin").write_bytes(b"x" * 100)
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        disk_cache.ensure(tmp_path / "cache" / "entry", broken)
    assert not list((tmp_path / "cache").iterdir())


@pytest.mark.skipif(sys.platform != "linux", reason="reads file descriptors' paths from /proc")
def test_files_and_folders_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        fsync(fd)

    def recording_replace(source, target):
        events.append(("replace", os.path.basename(target)))
        replace(source, target)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    disk_cache.ensure(tmp_path / "cache" / "entry", lambda folder: (folder / "data.bin").write_bytes(b"data"))
    staging = events[2][1]
    assert staging.startswith(".partial-")
    assert events == [("fsync", "data.bin"), ("fsync", "manifest.json"), ("fsync", staging), ("replace", "entry"),
                      ("fsync", "cache")]
