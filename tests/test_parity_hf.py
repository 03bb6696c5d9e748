"""Our transformer equals `transformers` on tiny random models of every supported architecture.

Same weights (loaded from the checkpoint transformers saved), same tokens: max |logit diff| < 1e-4
in float32. Also checks that KV-cached decoding equals the full forward pass.
"""

import pytest
import torch

from core.config import ModelConfig
from core.hf import read_hf_config, read_hf_weights
from core.kv_cache import KVCache
from core.loading import build_model, load_model
from core.model import Transformer

from conftest import randomize, save_tiny_checkpoint

ARCHS = ["llama", "mistral", "qwen2", "gpt2"]


@pytest.fixture(scope="module", params=ARCHS)
def pair(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    reference = save_tiny_checkpoint(request.param, directory)
    model_type, config = read_hf_config(directory)
    return request.param, reference, build_model(config, read_hf_weights(directory, model_type, config)), directory


def test_logits_match_transformers(pair):
    arch, reference, ours, _ = pair
    tokens = torch.randint(0, ours.config.vocab_size, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(tokens).logits
        got = ours(tokens, torch.arange(20))
    assert expected.std() > 0.5, "logits too small for the comparison to mean anything"
    assert (got - expected).abs().max().item() < 1e-4, arch


def test_config_reads_architecture_specifics(pair):
    arch, _, ours, _ = pair
    config = ours.config
    assert config.n_kv_heads == (4 if arch == "gpt2" else 2)  # GQA everywhere but GPT-2
    assert (config.attention, config.window) == (("sliding", 5) if arch == "mistral" else ("causal", None))
    assert config.qkv_bias == (arch in ("qwen2", "gpt2"))
    assert config.tie_embeddings == (arch in ("qwen2", "gpt2"))
    if config.tie_embeddings:
        assert ours.output.weight is ours.tok_embeddings.weight


def test_sliding_window_changes_the_result():
    """Guards the Mistral parity test against a window too large to matter."""
    config = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=48, vocab_size=50,
                         attention="sliding", window=5)
    model = randomize(Transformer(config))
    tokens = torch.arange(20)[None] % 50
    with torch.no_grad():
        sliding = model(tokens, torch.arange(20))
        config.attention = "causal"
        causal = model(tokens, torch.arange(20))
    assert (sliding[:, :5] - causal[:, :5]).abs().max() < 1e-5  # within the window: identical
    assert (sliding[:, 10:] - causal[:, 10:]).abs().max() > 1e-2


def test_kv_cached_decoding_equals_full_forward(pair):
    arch, _, ours, _ = pair
    tokens = torch.randint(0, ours.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = ours(tokens, torch.arange(16))
        cache = KVCache.allocate(ours.config, batch_size=2, max_len=16)
        steps = [ours(tokens[:, :10], torch.arange(10), kv_cache=cache)]
        for t in range(10, 16):
            steps.append(ours(tokens[:, t:t + 1], torch.tensor([t]), kv_cache=cache))
    assert (torch.cat(steps, dim=1) - full).abs().max().item() < 1e-4, arch


def test_load_model_from_checkpoint_directory(pair):
    arch, reference, _, directory = pair
    model, tokenizer, path = load_model(str(directory))
    assert path == directory
    ids = tokenizer.encode("The quick brown fox")
    assert tokenizer.decode(ids) == "The quick brown fox"
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.stop_ids == [tokenizer.backend.token_to_id("<|im_end|>")]
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits
        got = model(torch.tensor([ids]), torch.arange(len(ids)))
    assert (got - expected).abs().max().item() < 1e-4, arch
