"""GGUF loading: parity with transformers reading the same file, the converted cache, and bad files."""

import hashlib
import json
import os
import shutil

import pytest
import torch
from gguf import GGMLQuantizationType as Q

from core import loading
from core.errors import ModelLoadError
from core.gguf import gguf_tokenizer
from core.loading import load_model
from core.settings import cache_dir

from conftest import tiny_bpe_tokenizer, tiny_hf_model
from gguf_files import write_gguf


def tiny_gguf(tmp_path, arch="llama", qtype=Q.Q8_0, **kwargs):
    tokenizer = tiny_bpe_tokenizer()
    model = tiny_hf_model(arch, tokenizer.get_vocab_size())
    return write_gguf(tmp_path / f"tiny-{arch}-{qtype.name}.gguf", arch, model, tokenizer, qtype, **kwargs), model


@pytest.mark.parametrize("arch,qtype", [("llama", Q.F32), ("llama", Q.F16), ("llama", Q.Q8_0), ("llama", Q.Q4_0),
                                        ("qwen2", Q.Q4_1), ("qwen2", Q.Q5_0), ("gpt2", Q.Q8_0), ("gpt2", Q.BF16)])
def test_tiny_gguf_matches_transformers_reading_the_same_file(tmp_path, arch, qtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, _ = tiny_gguf(tmp_path, arch, qtype)
    ours, tokenizer, _ = load_model(str(path), dtype="float32")
    reference = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name).eval()
    text = "The quick brown fox jumps over the lazy dog"
    ids = tokenizer.encode(text)
    assert ids == AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)(text).input_ids
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits
        got = ours(torch.tensor([ids]), torch.arange(len(ids)))
    assert expected.std() > 0.5
    assert (got - expected).abs().max().item() < 1e-4


def test_conversion_is_cached_by_content(tmp_path):
    path, _ = tiny_gguf(tmp_path)
    model, _, _ = load_model(str(path))
    converted = [d for d in cache_dir("converted").iterdir() if not d.name.startswith(".")]
    weights = {d: (d / "weights.safetensors").stat().st_mtime_ns for d in converted}
    copy = shutil.copy(path, tmp_path / "copy.gguf")  # same bytes, another name: same cache entry
    again, _, _ = load_model(str(copy))
    assert {d: (d / "weights.safetensors").stat().st_mtime_ns for d in converted} == weights
    assert len([d for d in cache_dir("converted").iterdir() if not d.name.startswith(".")]) == len(converted)
    assert torch.equal(model.output.weight, again.output.weight)
    assert not list(cache_dir("converted").glob(".partial-*"))


def test_a_files_digest_is_remembered_until_its_bytes_change(tmp_path, monkeypatch):
    path, _ = tiny_gguf(tmp_path)
    digest = loading._file_digest(path)
    hashed = []
    file_digest = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda file, name: hashed.append(path) or file_digest(file, name))
    assert loading._file_digest(path) == digest and not hashed
    changed = bytearray(path.read_bytes())
    changed[-1] ^= 1
    mtime = path.stat().st_mtime_ns
    path.write_bytes(changed)
    os.utime(path, ns=(mtime, mtime))  # same size, same modification time: the change time still tells
    assert loading._file_digest(path) == hashlib.sha256(changed).hexdigest() and len(hashed) == 1
    memo = cache_dir("converted").parent / loading.DIGESTS_FILE
    memo.write_text(json.dumps({str(path.resolve()): [*json.loads(memo.read_text())[str(path.resolve())][:-1],
                                                      "../../elsewhere"]}))
    assert loading._file_digest(path) == hashlib.sha256(changed).hexdigest() and len(hashed) == 2
    memo.write_text("not json")
    assert loading._file_digest(path) == hashlib.sha256(changed).hexdigest() and len(hashed) == 3


def test_missing_file_names_what_was_tried_and_the_fix(tmp_path):
    with pytest.raises(ModelLoadError, match=r"missing\.gguf.*not found.*LLMKIT_MODEL"):
        load_model(str(tmp_path / "missing.gguf"))


def test_truncated_gguf_is_a_clear_error(tmp_path):
    path, _ = tiny_gguf(tmp_path)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        load_model(str(truncated))


def test_file_that_is_not_gguf(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_text("this is not a model")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        load_model(str(fake))


def test_unsupported_architecture(tmp_path):
    path, _ = tiny_gguf(tmp_path, architecture="mamba")
    with pytest.raises(ModelLoadError, match="architecture 'mamba' is not supported"):
        load_model(str(path))


def test_unsupported_quantisation_type(tmp_path):
    path, _ = tiny_gguf(tmp_path, qtype=Q.IQ2_XXS)
    with pytest.raises(ModelLoadError, match="IQ2_XXS.*Supported: F32"):
        load_model(str(path))


def test_sentencepiece_vocabulary_is_refused_with_the_alternative():
    with pytest.raises(ModelLoadError, match="Hugging Face checkpoint"):
        gguf_tokenizer({"tokenizer.ggml.model": "llama"})


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning", "ignore:overflow:RuntimeWarning")
@pytest.mark.parametrize("qtype", [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q4_0, Q.Q4_1, Q.Q8_0])
def test_dequantisation_matches_transformers_own_kernels(qtype):
    """gguf-py (ours) and transformers' torch kernels are independent implementations of the same blocks.

    The k-quants cannot be produced by gguf-py's quantiser, so random blocks stand in for real ones.
    """
    import numpy as np
    from gguf import GGML_QUANT_SIZES
    from transformers.integrations.gguf.dequant import dequantize as reference_dequantize

    from core.gguf import dequantize_blocks

    block, size = GGML_QUANT_SIZES[qtype]
    raw = np.random.default_rng(0).integers(0, 256, size=(8, 2 * size), dtype=np.uint8)  # 8 rows of 2 blocks
    got = dequantize_blocks(raw, qtype, (8, 2 * block))
    expected = reference_dequantize(torch.from_numpy(raw.copy()).reshape(-1), int(qtype)).reshape(8, 2 * block)
    assert got.isfinite().float().mean() > 0.5  # random fp16 scales are mostly finite
    torch.testing.assert_close(got, expected, equal_nan=True, rtol=1e-6, atol=0)
