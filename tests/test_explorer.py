"""The attention explorer's handlers without a server: tokens as the model reads them, attention maps whose rows sum
to one under the causal mask, masks equal to core.attention's (and the fixed pattern to its definition), the
sampling filters as core.sampling.next_token draws, and a KV cache calculator equal to the bytes KVCache.allocate
holds. A tiny random model for the mechanics; the embedded SmolLM2 for the claim the page opens with."""

import copy
import math
import re

import numpy as np
import pytest
import torch

from apps.explorer.app import (
    DEFAULT_HEAD,
    DEFAULT_LAYER,
    MAX_TEXT_CHARS,
    MEAN_OF_HEADS,
    Explorer,
    ExplorerError,
    head_index,
)
from apps.explorer.charts import attention_figure, masks_figure
from apps.explorer.command import ExplorerSettings, serve
from apps.explorer.distribution import filter_steps
from apps.explorer.kv_memory import DTYPES, KVMemoryError, KVShape, kv_memory
from apps.explorer.masks import MaskError, MaskSettings, fixed_sparse_mask, mask_views
from core.attention import attention_mask
from core.config import ModelConfig
from core.kv_cache import KVCache
from core.loading import load_model
from core.sampling import SamplingParams, next_token

from conftest import save_tiny_checkpoint

TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    """A tiny random Llama (4 query heads over 2 KV heads, 2 layers, context 256) with a chat template."""
    directory = tmp_path_factory.mktemp("tiny")
    save_tiny_checkpoint("llama", directory)
    model, tokenizer, _ = load_model(str(directory), "float32")
    return Explorer(model, tokenizer, "tiny")


def test_tokens_are_what_the_model_reads(explorer):
    tokens = explorer.tokens(TEXT)
    assert list(tokens.ids) == explorer.tokenizer.encode(TEXT) and tokens.prompt == TEXT
    assert "".join(tokens.pieces) == TEXT and not any(tokens.special)
    assert tokens.rows()[1] == [1, tokens.ids[1], tokens.pieces[1].replace(" ", "␣")]
    assert tokens.html().count("class='explorer-token'") == len(tokens.ids)


def test_a_chat_message_shows_the_template_and_its_control_tokens(explorer):
    tokens = explorer.tokens("hi <|im_end|> there", as_chat=True)
    messages = [{"role": "user", "content": "hi <|im_end|> there"}]
    assert tokens.prompt == explorer.tokenizer.apply_chat_template(messages)
    assert list(tokens.ids) == explorer.tokenizer.encode_chat(messages)
    specials = [piece for piece, special in zip(tokens.pieces, tokens.special, strict=True) if special]
    assert specials == ["<|im_start|>", "<|im_end|>", "<|im_start|>"]  # the typed <|im_end|> stays text
    assert tokens.html().count("explorer-special") == 3


def test_a_model_without_a_chat_template_says_to_untick_the_box(explorer):
    tokenizer = copy.copy(explorer.tokenizer)
    tokenizer.chat_template = None
    with pytest.raises(ExplorerError, match="no chat template.*untick “as a chat message”"):
        Explorer(explorer.model, tokenizer).tokens(TEXT, as_chat=True)


def test_typed_markup_stays_text(explorer):
    tokens = explorer.tokens("<|im_start|><b>bold</b>")
    assert not any(tokens.special)
    tags = set(re.findall(r"<(/?\w+)", tokens.html()))
    assert tags == {"div", "/div", "p", "/p", "span", "/span"}  # the typed <b> is escaped, not markup


@pytest.mark.parametrize("text,message", [("", "Type a text first"), ("   ", "Type a text first"),
                                          ("x" * (MAX_TEXT_CHARS + 1), "at most 4,000"),
                                          ("The quick brown fox " * 80, "the attention maps take at most 256")])
def test_bad_text_is_refused_before_the_model_runs(explorer, text, message):
    with pytest.raises(ExplorerError, match=message):
        explorer.run(text)


def test_maps_have_one_row_per_token_summing_to_one_under_the_causal_mask(explorer):
    run = explorer.run(TEXT)
    config = explorer.model.config
    t = len(run.tokens.ids)
    assert run.weights.shape == (config.n_layers, config.n_heads, t, t)
    assert np.allclose(run.weights.sum(-1), 1, atol=1e-5)
    assert not run.weights[..., ~np.tril(np.ones((t, t), dtype=bool))].any()
    assert np.allclose(run.attention(1, None), run.weights[1].mean(0))
    assert explorer.run(TEXT) is run  # the layer slider and head dropdown reuse the run
    with pytest.raises(ExplorerError, match="layer from 0 to 1"):
        run.attention(2, 0)


def test_the_strongest_keys_are_the_largest_of_the_row(explorer):
    run = explorer.run(TEXT)
    query = len(run.tokens.ids) - 1
    rows = run.strongest(1, 3, query, count=4)
    row = run.weights[1, 3, query]
    assert [r[0] for r in rows] == list(np.argsort(-row)[:4])
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)
    assert run.strongest(0, 0, 0) == [[0, "The", 1.0]]  # the first token sees only itself
    assert head_index(MEAN_OF_HEADS) is None and head_index("head 3") == 3
    with pytest.raises(ExplorerError):
        head_index("head x")


def test_the_map_figure_blanks_the_masked_keys(explorer):
    run = explorer.run(TEXT)
    figure = attention_figure(run.attention(0, 1), run.tokens.labels(), "layer 0, head 1")
    z = np.array(figure.data[0].z, dtype=float)
    below = np.tril(np.ones(z.shape, dtype=bool))
    assert np.allclose(z[below], run.weights[0, 1][below]) and np.isnan(z[~below]).all()
    assert list(figure.data[0].y) == run.tokens.labels()


@pytest.mark.parametrize("settings", [MaskSettings(), MaskSettings(length=17, window=1, stride=5, summary=2),
                                      MaskSettings(length=40, window=7, stride=3, summary=3)])
def test_masks_are_core_attentions(settings):
    views = mask_views(settings)
    base = dict(dim=8, n_layers=1, n_heads=1, n_kv_heads=1, ffn_dim=8, vocab_size=1)
    pos = torch.arange(settings.length)[None]
    expected = [attention_mask(ModelConfig(**base), pos, pos)[0, 0],
                attention_mask(ModelConfig(**base, attention="sliding", window=settings.window), pos, pos)[0, 0],
                attention_mask(ModelConfig(**base, attention="strided", window=settings.window,
                                           stride=settings.stride), pos, pos)[0, 0]]
    masks = list(views.values())
    assert len(masks) == 4 and all(torch.equal(got, want) for got, want in zip(masks, expected, strict=False))
    figure = masks_figure(views)
    assert [np.array(trace.z).tolist() for trace in figure.data] == [m.int().tolist() for m in masks]


def test_the_fixed_pattern_follows_its_definition():
    """Child et al. (2019): query i attends j <= i in its own block of l, or j among the last c of any block."""
    length, block, summary = 23, 5, 2
    expected = torch.tensor([[j <= i and (j // block == i // block or j % block >= block - summary)
                              for j in range(length)] for i in range(length)])
    assert torch.equal(fixed_sparse_mask(length, block, summary), expected)


@pytest.mark.parametrize("bad", [dict(length=0), dict(length=129), dict(window=2.5), dict(summary=7, stride=6)])
def test_bad_mask_settings_are_refused(bad):
    with pytest.raises(MaskError):
        MaskSettings(**bad)


@pytest.mark.parametrize("params", [SamplingParams(temperature=0.7, top_k=12), SamplingParams(temperature=1.3,
                                    top_p=0.6), SamplingParams(temperature=1.0, min_p=0.2),
                                    SamplingParams(temperature=0.9, top_k=20, top_p=0.8, min_p=0.05)])
def test_the_filters_keep_exactly_what_the_engine_draws_from(params):
    logits = torch.randn(60, generator=torch.Generator().manual_seed(3)) * 2
    filtered = filter_steps(logits, params)
    assert math.isclose(float(filtered.final.sum()), 1, abs_tol=1e-6)
    survivors = set(torch.nonzero(filtered.final).flatten().tolist())
    assert survivors == set(torch.nonzero(filtered.top_k & filtered.top_p & filtered.min_p).flatten().tolist())
    assert 1 < len(survivors) < 60
    generator = torch.Generator().manual_seed(0)
    draws = torch.tensor([next_token(logits, params, [], [], generator=generator) for _ in range(3000)])
    assert set(draws.tolist()) <= survivors  # nothing outside the filters is ever drawn
    frequencies = torch.bincount(draws, minlength=60).float() / len(draws)
    assert (frequencies - filtered.final).abs().max() < 0.04  # and the survivors with their renormalised odds


def test_temperature_zero_is_the_argmax_alone():
    logits = torch.randn(60, generator=torch.Generator().manual_seed(4))
    filtered = filter_steps(logits, SamplingParams(temperature=0.0, top_k=5))
    assert filtered.greedy and filtered.survivors == 1
    assert int(filtered.final.argmax()) == next_token(logits, SamplingParams(temperature=0.0), [], [])


def test_the_next_token_table(explorer):
    filtered, rows = explorer.next_tokens(TEXT, False, temperature=1.0, top_k=10, top_p=1.0, min_p=0.0, rows=12)
    assert filtered.survivors == 10 and len(rows) == 12
    assert [row[4] for row in rows] == ["✓"] * 10 + ["✗"] * 2  # most likely first: top-k keeps the first ten
    assert math.isclose(sum(row[7] for row in rows), 1, abs_tol=1e-3)
    assert rows[0][2] == int(explorer.run(TEXT).logits.argmax())
    with pytest.raises(ExplorerError, match="top_p must be"):
        explorer.next_tokens(TEXT, False, temperature=1.0, top_k=0, top_p=0.0, min_p=0.0)


@pytest.mark.parametrize("shape", [
    KVShape(n_layers=3, n_heads=4, n_kv_heads=4, head_dim=8, context=50),  # multi-head
    KVShape(n_layers=2, n_heads=6, n_kv_heads=2, head_dim=16, context=33, batch=3, dtype="bfloat16"),  # GQA
    KVShape(n_layers=2, n_heads=4, n_kv_heads=1, head_dim=8, context=40, dtype="float16", window=9)])  # window
def test_the_calculator_is_what_the_cache_allocates(shape):
    memory = kv_memory(shape)
    config = shape.config()
    cache = KVCache.allocate(config, shape.batch, shape.context, DTYPES[shape.dtype])
    assert memory.allocated == cache.k.nbytes + cache.v.nbytes
    mha = KVCache.allocate(ModelConfig(**{**config.to_dict(), "n_kv_heads": shape.n_heads}), shape.batch,
                           shape.context, DTYPES[shape.dtype])
    assert memory.mha == mha.k.nbytes + mha.v.nbytes
    assert memory.per_token * shape.context * shape.batch == memory.allocated
    if shape.window:
        rolling = KVCache.allocate(config, shape.batch, shape.window, DTYPES[shape.dtype])
        assert memory.rolling == rolling.k.nbytes + rolling.v.nbytes < memory.allocated
    else:
        assert memory.rolling is None


def test_smollm2_shape_in_the_calculator():
    """SmolLM2-135M at its 8,192 tokens in float32: 30 x 3 KV heads x 64 dims x 2 x 4 bytes = 45 KiB a token."""
    memory = kv_memory(KVShape(n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64, context=8192))
    assert memory.per_token == 46_080 and memory.allocated == 46_080 * 8192 and memory.mha == 3 * memory.allocated


@pytest.mark.parametrize("bad,message", [(dict(n_kv_heads=3), "does not divide n_heads"), (dict(dtype="int8"), "dtype"),
                                         (dict(context=0), "context must be"), (dict(batch=10**6), "batch"),
                                         (dict(head_dim=3), "odd head_dim")])
def test_bad_calculator_input_is_refused_with_its_reason(bad, message):
    with pytest.raises(KVMemoryError, match=message):
        KVShape(**({"n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "head_dim": 8, "context": 16} | bad)).config()


def test_a_server_url_is_refused(capsys):
    with pytest.raises(SystemExit, match="the explorer needs the model's weights in this process"):
        serve(ExplorerSettings(model="http://127.0.0.1:9/v1"))


def test_smollm2_resolves_it_to_the_animal_where_the_page_opens(llm):
    """The page opens on the first example at layer 13, head 8: there "it" attends "animal" most."""
    run = Explorer(llm.model, llm.tokenizer).run("The animal didn't cross the street because it was too tired.")
    query = run.default_query()
    assert run.tokens.pieces[query] == " it"
    strongest = run.strongest(DEFAULT_LAYER, DEFAULT_HEAD, query)
    assert strongest[0][1] == "␣animal" and strongest[0][2] > 0.5, strongest
