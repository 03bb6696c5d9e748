"""Model files are checked before anything is allocated for them: every size in a GGUF header or a config.json
(type, bounds, consistency, agreement with the tensors present) and the memory the model will take. A malformed
file is a ModelLoadError naming the file and the field, fast and without a large allocation."""

import json
import time
import tracemalloc

import pytest
import torch
from gguf import GGMLQuantizationType as Q

from core import settings
from core.config import ModelConfig, parameter_count, parameter_shapes
from core.errors import ModelLoadError
from core.loading import load_model
from core.model import Transformer

from conftest import save_tiny_checkpoint, tiny_bpe_tokenizer, tiny_hf_model
from gguf_files import write_gguf


def tiny_gguf(tmp_path, metadata=None, arch="llama"):
    tokenizer = tiny_bpe_tokenizer()
    model = tiny_hf_model(arch, tokenizer.get_vocab_size())
    return write_gguf(tmp_path / "hostile.gguf", arch, model, tokenizer, Q.F32, metadata=metadata)


def tiny_checkpoint(tmp_path, arch="llama", **changes):
    """A tiny checkpoint directory whose config.json has `changes` applied (a value of ... drops the key)."""
    directory = tmp_path / f"tiny-{arch}"
    save_tiny_checkpoint(arch, directory)
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is ...:
            del config[key]
        else:
            config[key] = value
    path.write_text(json.dumps(config))
    return directory


def refused_quickly(path) -> str:
    """The ModelLoadError's message for loading `path`, which must come within 2 s and allocate under 20 MB."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ModelLoadError) as refused:
            load_model(str(path))
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0, f"took {elapsed:.1f} s to refuse"
    assert peak < 20e6, f"allocated {peak / 1e6:.0f} MB before refusing"
    return str(refused.value)


def test_a_gguf_claiming_3_million_layers_is_refused_at_once(tmp_path):
    path = tiny_gguf(tmp_path, {"llama.block_count": 3_000_000})
    message = refused_quickly(path)
    assert str(path) in message
    assert "llama.block_count" in message and "3000000" in message


def test_a_config_json_claiming_3_million_layers_is_refused_at_once(tmp_path):
    directory = tiny_checkpoint(tmp_path, num_hidden_layers=3_000_000)
    message = refused_quickly(directory)
    assert str(directory / "config.json") in message
    assert "'num_hidden_layers'" in message and "3000000" in message


@pytest.mark.parametrize("metadata,match", [
    ({"llama.block_count": 100}, r"llama\.block_count.*is 100, but the weights hold layers 0-1"),
    ({"llama.block_count": -1}, r"llama\.block_count.*got -1"),
    ({"llama.block_count": "two"}, r"llama\.block_count.*must be a whole number, got 'two'"),
    ({"llama.block_count": None}, r"lacks llama\.block_count"),
    ({"llama.block_count": 2.0}, r"llama\.block_count.*whole number"),
    ({"llama.embedding_length": 128}, r"llama\.embedding_length.*tok_embeddings\.weight has shape \(300, 64\)"),
    ({"llama.attention.head_count": 3}, r"llama\.attention\.head_count: .*3, which does not divide dim 64"),
    ({"llama.attention.head_count_kv": 4}, r"llama\.attention\.head_count_kv.*layers\.0\.attn\.wk\.weight"),
    ({"llama.feed_forward_length": 10**9}, r"llama\.feed_forward_length.*must lie in 1\.\.1048576"),
    ({"llama.feed_forward_length": 95}, r"llama\.feed_forward_length.*has shape \(96, 64\), not \(95, 64\)"),
    ({"llama.context_length": 0}, r"llama\.context_length.*got 0"),
    ({"llama.rope.freq_base": -5.0}, r"llama\.rope\.freq_base.*positive finite number"),
    ({"tokenizer.ggml.eos_token_id": 10**6}, r"tokenizer\.ggml\.eos_token_id is 1000000, outside the 300 tokens"),
    ({"tokenizer.ggml.bos_token_id": "one"}, r"tokenizer\.ggml\.bos_token_id must be of type int"),
    ({"tokenizer.ggml.tokens": None}, r"tokenizer\.ggml\.tokens must be a list of strings"),
    ({"tokenizer.chat_template": 7}, r"tokenizer\.chat_template must be of type str"),
])
def test_malformed_gguf_metadata_names_the_file_and_the_key(tmp_path, metadata, match):
    path = tiny_gguf(tmp_path, metadata)
    with pytest.raises(ModelLoadError, match=match) as refused:
        load_model(str(path))
    assert str(refused.value).startswith(str(path))


@pytest.mark.parametrize("changes,match", [
    (dict(num_hidden_layers=-2), r"'num_hidden_layers'.*got -2"),
    (dict(num_hidden_layers=...), r"lacks 'num_hidden_layers'"),
    (dict(num_hidden_layers="2"), r"'num_hidden_layers'.*whole number, got '2'"),
    (dict(num_hidden_layers=2.5), r"'num_hidden_layers'.*whole number, got 2\.5"),
    (dict(num_hidden_layers=True), r"'num_hidden_layers'.*whole number, got True"),
    (dict(num_hidden_layers=5), r"'num_hidden_layers'.*is 5, but the weights hold layers 0-1"),
    (dict(num_attention_heads=3), r"'num_attention_heads'.*3, which does not divide dim 64"),
    (dict(num_attention_heads=0), r"'num_attention_heads'.*got 0"),
    (dict(num_key_value_heads=3), r"'num_key_value_heads'.*3, which does not divide n_heads 4"),
    (dict(hidden_size=128, head_dim=32), r"'hidden_size'.*weight has shape \(300, 64\), not \(300, 128\)"),
    (dict(vocab_size=301), r"'vocab_size'.*has shape \(300, 64\), not \(301, 64\)"),
    (dict(intermediate_size=[96]), r"'intermediate_size'.*whole number"),
    (dict(max_position_embeddings=10**12), r"'max_position_embeddings'.*must lie in 1\.\."),
    (dict(rms_norm_eps="tiny"), r"'rms_norm_eps'.*positive finite number"),
    (dict(tie_word_embeddings="no"), r"'tie_word_embeddings'.*must be true or false"),
    (dict(rope_parameters="yes"), r"RoPE scaling 'yes' is not supported"),
])
def test_malformed_config_json_names_the_file_and_the_key(tmp_path, changes, match):
    directory = tiny_checkpoint(tmp_path, **changes)
    with pytest.raises(ModelLoadError, match=match) as refused:
        load_model(str(directory))
    assert str(directory) in str(refused.value)


def test_an_untied_config_needs_an_output_projection(tmp_path):
    directory = tiny_checkpoint(tmp_path, "qwen2", tie_word_embeddings=False)  # the weights are tied
    with pytest.raises(ModelLoadError, match="'tie_word_embeddings'.*no separate output projection"):
        load_model(str(directory))


@pytest.mark.parametrize("changes,match", [
    (dict(n_embd="64"), r"'n_embd'.*whole number"),
    (dict(n_layer=10**6), r"'n_layer'.*must lie in 1\.\.1024"),
    (dict(n_positions=512), r"'n_positions'.*pos_embeddings\.weight has shape \(1024, 64\)"),
    (dict(activation_function=["relu"]), r"GPT-2 activation \['relu'\] is not supported"),
])
def test_malformed_gpt2_config_json_names_the_key(tmp_path, changes, match):
    with pytest.raises(ModelLoadError, match=match):
        load_model(str(tiny_checkpoint(tmp_path, "gpt2", **changes)))


@pytest.mark.parametrize("content,match", [("{not json", "cannot be read as JSON"), ("[1, 2]", "JSON object")])
def test_config_json_that_is_not_a_json_object(tmp_path, content, match):
    directory = tiny_checkpoint(tmp_path)
    (directory / "config.json").write_text(content)
    with pytest.raises(ModelLoadError, match=match):
        load_model(str(directory))


@pytest.mark.parametrize("name,content", [("tokenizer.json", "{"), ("tokenizer_config.json", "[")])
def test_unreadable_tokenizer_files_are_a_clear_error(tmp_path, name, content):
    directory = tiny_checkpoint(tmp_path)
    (directory / name).write_text(content)
    with pytest.raises(ModelLoadError, match="the tokenizer files cannot be read"):
        load_model(str(directory))


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    directory = tiny_checkpoint(tmp_path)
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=r"model\.safetensors is not a readable safetensors file"):
        load_model(str(directory))


def test_a_shard_index_may_not_point_outside_the_checkpoint(tmp_path):
    directory = tiny_checkpoint(tmp_path)
    index = {"weight_map": {"model.embed_tokens.weight": "../elsewhere.safetensors"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="every shard must be a file name"):
        load_model(str(directory))


def test_the_memory_budget_counts_weights_and_a_default_context_kv_cache(tmp_path, monkeypatch):
    """~0.4 MB of weights, but a KV cache for 4096 tokens takes 2 MiB: over a 1 MiB budget, under a 3 MiB one."""
    directory = tiny_checkpoint(tmp_path, max_position_embeddings=4096)
    monkeypatch.setenv(settings.MEMORY_BUDGET, "1")
    with pytest.raises(ModelLoadError, match=r"takes about 2 MiB \(100,160 parameters in float32 and a KV cache "
                                             r"for 4096 tokens\), over the memory budget of 1 MiB\. .*"
                                             r"LLMKIT_MEMORY_BUDGET_MB"):
        load_model(str(directory))
    monkeypatch.setenv(settings.MEMORY_BUDGET, "3")
    assert load_model(str(directory))[0].config.max_seq_len == 4096


def test_the_memory_budget_is_checked_before_a_gguf_is_converted(tmp_path, monkeypatch):
    path = tiny_gguf(tmp_path, {"llama.context_length": 4096})
    monkeypatch.setenv(settings.CACHE, str(tmp_path / "cache"))
    monkeypatch.setenv(settings.MEMORY_BUDGET, "1")
    with pytest.raises(ModelLoadError, match="over the memory budget of 1 MiB"):
        load_model(str(path))
    assert not list(settings.cache_dir("converted").iterdir())  # nothing converted, no staging folder left


def test_the_default_budget_is_three_quarters_of_physical_memory(monkeypatch):
    import os

    monkeypatch.delenv(settings.MEMORY_BUDGET, raising=False)
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert settings.memory_budget() == physical * 3 // 4
    monkeypatch.setenv(settings.MEMORY_BUDGET, "512")
    assert settings.memory_budget() == 512 * 2**20


@pytest.mark.parametrize("changes", [dict(), dict(tie_embeddings=True), dict(qkv_bias=True), dict(proj_bias=True),
                                     dict(norm="layernorm", activation="gelu_tanh", position="learned", qkv_bias=True,
                                          proj_bias=True, tie_embeddings=True),
                                     dict(activation="gelu", n_kv_heads=4)])
def test_parameter_shapes_are_what_the_transformer_holds(changes):
    """The shapes the loaders check files against, computed without building a model, match a built one."""
    config = ModelConfig(**dict(dim=16, n_layers=3, n_heads=4, n_kv_heads=2, ffn_dim=24, vocab_size=50,
                                max_seq_len=32) | changes)
    model = Transformer(config)
    built = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    if config.tie_embeddings:
        del built["output.weight"]
    assert parameter_shapes(config) == built
    assert parameter_count(config) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("bad,field,match", [
    (dict(n_layers=1025), "n_layers", r"must lie in 1\.\.1024, got 1025"),
    (dict(dim=torch.tensor(8)), "dim", r"must be a whole number"),
    (dict(norm_eps=float("nan")), "norm_eps", r"must be a positive finite number"),
    (dict(tie_embeddings="yes"), "tie_embeddings", r"must be true or false"),
    (dict(attention="sliding", window=0), "window", r"must lie in 1\.\..* with attention='sliding'"),
])
def test_config_fields_are_typed_and_bounded(bad, field, match):
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field} {match}") as refused:
        ModelConfig(**dict(dim=8, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=8, vocab_size=10) | bad)
    assert refused.value.field == field
