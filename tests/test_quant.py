"""The int4 representation (core.quant): exact on 4-bit weights, within its stated accuracy on SmolLM2, a cached
decode that still equals a full forward, and float32 where the CPU lacks bfloat16 instructions."""

import pytest
import torch
from gguf import GGMLQuantizationType as Q

from bench.accuracy import BOUNDS, TEXTS, loaded, logit_figures
from core import LLM, EngineConfig, cpu_kernels, quant
from core.loading import load_model
from core.model import Linear

from conftest import save_tiny_checkpoint, tiny_bpe_tokenizer, tiny_hf_model
from gguf_files import write_gguf

NO_STOP = {2: -1e4}


def grid_weight(symmetric: bool, rows: int = 48, groups: int = 6, seed: int = 0) -> torch.Tensor:
    """Weights on a 4-bit grid per group of 32, as a Q4_0 (symmetric) or Q4_1 file dequantises to."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (rows, groups, quant.GROUP), generator=generator).float()
    scale = torch.rand(rows, groups, 1, generator=generator) * 0.1 + 0.01
    if symmetric:
        q[..., 0] = 0  # Q4_0: the value of largest magnitude is q = 0, i.e. -8 steps
        q = q.clamp(max=14)
        return ((q - 8) * scale).view(rows, -1)
    q[..., 0], q[..., 1] = 0, 15  # Q4_1: the group's minimum and maximum
    minimum = torch.randn(rows, groups, 1, generator=generator) * 0.1
    return (q * scale + minimum).view(rows, -1)


@pytest.mark.parametrize("symmetric", [False, True])
def test_weights_on_a_4bit_grid_are_found_exactly(symmetric):
    weight = grid_weight(symmetric)
    q, scale, zero, exact = quant.int4_groups(weight)
    assert exact
    assert int(q.min()) >= 0 and int(q.max()) <= 15
    rebuilt = ((q.view(48, 6, 32) - 8) * scale[..., None] + zero[..., None]).view(48, -1)
    assert (rebuilt - weight).abs().max().item() < 1e-6


def test_other_weights_are_rounded_and_said_to_be():
    weight = torch.randn(48, 192)
    q, scale, zero, exact = quant.int4_groups(weight)
    assert not exact
    rebuilt = ((q.view(48, 6, 32) - 8) * scale[..., None] + zero[..., None]).view(48, -1)
    step = scale.repeat_interleave(32, dim=1)
    assert ((rebuilt - weight).abs() <= step / 2 + 1e-6).all()  # the nearest point of the group's grid


def test_int4_linear_computes_with_its_weights():
    weight, bias = grid_weight(False), torch.randn(48)
    layer, exact = quant.Int4Linear.from_weight(weight, bias)
    x = torch.randn(3, 5, 192)
    got = layer(x.to(torch.bfloat16)).float()
    expected = x @ weight.T + bias
    assert exact and got.shape == (3, 5, 48)
    # bfloat16 activations, scales and output: a relative error of a few 2^-8
    assert (got - expected).abs().max().item() < 0.03 * expected.abs().max().item()


def unpacked_and_through_kernel() -> tuple[torch.Tensor, torch.Tensor]:
    layer, _ = quant.Int4Linear.from_weight(grid_weight(False, rows=128), None)
    assert quant.unpacks(128)
    unpacked = quant.unpack_int4(layer.packed, layer.scales_and_zeros)  # (K, N)
    through_kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(torch.eye(192, dtype=torch.bfloat16), layer.packed,
                                                                quant.GROUP, layer.scales_and_zeros)
    assert unpacked.shape == (192, 128)
    return unpacked, through_kernel


def test_unpacked_weights_are_the_kernels_own():
    """unpack_int4 reads torch's private packing: the identity through the kernel gives the same W^T, to the bit
    through core.cpu_kernels (one rounding, as the kernel's)."""
    unpacked, through_kernel = unpacked_and_through_kernel()
    if cpu_kernels.available():
        assert torch.equal(unpacked, through_kernel)
    assert (unpacked.float() - through_kernel.float()).abs().max().item() <= 2**-8 * through_kernel.abs().max().item()


def test_unpacked_weights_without_the_kernel(without_cpu_kernels):
    with pytest.warns(UserWarning, match="no C compiler"):
        unpacked, through_kernel = unpacked_and_through_kernel()
    assert (unpacked.float() - through_kernel.float()).abs().max().item() <= 2**-8 * through_kernel.abs().max().item()


@pytest.mark.parametrize("out_features", [128, 48])
def test_many_rows_compute_what_few_rows_do(out_features):
    """From UNPACKED_ROWS (BFLOAT16_ROWS without core.cpu_kernels) rows on, the product runs on unpacked weights
    (where the output size allows): same values, to bfloat16 rounding."""
    weight, bias = grid_weight(False, rows=out_features), torch.randn(out_features)
    layer, _ = quant.Int4Linear.from_weight(weight, bias)
    x = torch.randn(quant.BFLOAT16_ROWS, 192, dtype=torch.bfloat16)
    many = layer(x).float()
    few = torch.cat([layer(x[i: i + 4]) for i in range(0, len(x), 4)]).float()
    expected = x.float() @ weight.T + bias
    assert quant.unpacks(out_features) == (out_features % quant.PACK_BLOCK == 0)
    assert (many - few).abs().max().item() < 0.02 * expected.abs().max().item()
    assert (many - expected).abs().max().item() < 0.03 * expected.abs().max().item()


def q8_weight(rows: int = 40, groups: int = 6, seed: int = 0) -> torch.Tensor:
    """Weights as a Q8_0 file dequantises to: q in -127..127 (127 in magnitude in each group), float16 scales."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.randint(-127, 128, (rows, groups, quant.GROUP), generator=generator).float()
    q[..., 0] = 127 * torch.sign(torch.randn(rows, groups, generator=generator))
    scale = (torch.rand(rows, groups, 1, generator=generator) * 0.01 + 1e-4).half().float()
    return (q * scale).view(rows, -1)


def test_q8_weights_are_found_exactly():
    weight = q8_weight()
    q, scales = quant.int8_groups(weight)
    assert q.dtype == torch.int8 and scales.shape == (40, 6)
    assert torch.equal((q.view(40, 6, 32).float() * scales[..., None]).view(40, -1), weight)


def int8_output(weight: torch.Tensor) -> quant.Int8Output:
    layer = quant.Int8Output(weight.shape[1], weight.shape[0])
    layer.q, layer.scales = quant.int8_groups(weight)
    return layer


@pytest.fixture
def without_cpu_kernels(monkeypatch):
    """core.cpu_kernels as on a machine without a C compiler."""
    monkeypatch.setenv("CC", "/nonexistent/cc")
    cpu_kernels._library.cache_clear()
    yield
    cpu_kernels._library.cache_clear()


def test_the_int8_kernel_is_built_here():
    """The test machine has AVX-512 and a C compiler: the decode path's kernel must be the one in use."""
    if not quant.cpuinfo_flags() >= cpu_kernels.NEEDED_CPU_FLAGS:
        pytest.skip("this CPU has no AVX-512")
    assert cpu_kernels.int8_matmul(torch.ones(1, 32), torch.ones(3, 32, dtype=torch.int8),
                                   torch.full((3, 1), 0.5)).tolist() == [[16.0, 16.0, 16.0]]


@pytest.mark.parametrize("rows", [1, 2, 3, 8, 9, 20])
def test_int8_output_computes_with_its_weights(rows):
    """Through the kernel (up to INT8_ROWS rows, float32 products) and the bfloat16 copy (more rows)."""
    weight = q8_weight()
    x = torch.randn(rows, 192)
    got = int8_output(weight)(x.to(torch.bfloat16)[None])
    expected = x.to(torch.bfloat16).float() @ weight.T
    scale = expected.abs().max().item()
    assert got.shape == (1, rows, 40) and got.dtype == torch.float32
    tolerance = 1e-5 if rows <= quant.INT8_ROWS and cpu_kernels.available() else 2**-7
    assert (got[0] - expected).abs().max().item() < tolerance * scale


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_int8_output_without_the_kernel(without_cpu_kernels, rows):
    """No compiler: a warning once, and float16 (one or two rows) or bfloat16 copies compute the same product."""
    weight = q8_weight()
    x = torch.randn(rows, 192)
    with pytest.warns(UserWarning, match="no C compiler"):
        assert cpu_kernels.int8_matmul(x, *quant.int8_groups(weight)) is None
    expected = x.to(torch.bfloat16).float() @ weight.T
    got = int8_output(weight)(x.to(torch.bfloat16))
    assert (got - expected).abs().max().item() < 2**-7 * expected.abs().max().item()


def test_the_tied_embedding_reads_the_output_table(tmp_path):
    save_tiny_checkpoint("qwen2", tmp_path)  # ties its embedding and output tables
    model = load_model(str(tmp_path), dtype="int4")[0]
    assert isinstance(model.tok_embeddings, quant.TiedEmbedding) and not list(model.tok_embeddings.state_dict())
    ids = torch.tensor([[1, 5, 7]])
    assert torch.equal(model.tok_embeddings(ids), model.output.copy(torch.float32)[ids])


def test_input_size_not_a_multiple_of_the_group_is_refused():
    with pytest.raises(ValueError, match="multiple of 32"):
        quant.int4_groups(torch.randn(4, 40))


@pytest.fixture(scope="module")
def tiny_int4(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_checkpoint("llama", directory)
    return load_model(str(directory), dtype="int4")[:2]


def test_int4_model_fuses_its_projections(tiny_int4):
    model, _ = tiny_int4
    assert isinstance(model.layers[0].attn.wq, quant.Int4Linear) and model.layers[0].attn.wk is None
    assert isinstance(model.layers[0].ffn.w1, quant.Int4Linear) and model.layers[0].ffn.w3 is None
    assert model.dtype == torch.bfloat16 and isinstance(model.output, quant.Int8Output)


def tiny_gguf(tmp_path, qtype):
    tokenizer = tiny_bpe_tokenizer()
    model = tiny_hf_model("llama", tokenizer.get_vocab_size())
    return write_gguf(tmp_path / f"tiny-{qtype.name}.gguf", "llama", model, tokenizer, qtype)


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1])
def test_auto_keeps_a_4bit_file_in_4_bits_and_exact(tmp_path, monkeypatch, qtype):
    monkeypatch.setenv(quant.CPU_FLAGS, "avx512f avx512_bf16")
    path = tiny_gguf(tmp_path, qtype)
    model, _, _ = load_model(str(path))
    exact, _, _ = load_model(str(path), dtype="float32")
    assert isinstance(model.layers[0].ffn.w1, quant.Int4Linear)
    ids = torch.tensor([list(range(3, 40))])
    with torch.inference_mode():
        got, expected = model(ids, torch.arange(37)), exact(ids, torch.arange(37))
    assert (got - expected).abs().max().item() < 0.05 * expected.abs().max().item()
    # Its layers hold the file's weights: unpacking them by a product with the identity gives them back.
    layer, reference = model.layers[0].attn.wo, exact.layers[0].attn.wo.weight
    with torch.inference_mode():
        unpacked = layer(torch.eye(reference.shape[1], dtype=torch.bfloat16)).float().T
    assert (unpacked - reference).abs().max().item() <= 2**-7 * reference.abs().max().item()


def test_auto_keeps_an_8bit_file_in_float32(tmp_path, monkeypatch):
    monkeypatch.setenv(quant.CPU_FLAGS, "avx512f avx512_bf16")
    model, _, _ = load_model(str(tiny_gguf(tmp_path, Q.Q8_0)))
    assert model.dtype == torch.float32 and isinstance(model.layers[0].ffn.w1, Linear)


def test_without_bfloat16_instructions_auto_is_float32(tmp_path, monkeypatch):
    """The fallback: on a CPU without AVX512-BF16 / AMX the same file loads as float32, the exact path."""
    monkeypatch.setenv(quant.CPU_FLAGS, "sse4_2 avx2 fma")
    assert not quant.bfloat16_kernels()
    model, _, _ = load_model(str(tiny_gguf(tmp_path, Q.Q4_1)))
    assert model.dtype == torch.float32 and isinstance(model.layers[0].attn.wq, Linear)


@pytest.fixture(scope="module")
def float32_reference(smollm2_path):
    return LLM.load(str(smollm2_path), dtype="float32")


@pytest.mark.parametrize("representation", ["int4", "int4-prefill", "int4-decode", "bfloat16", "float16"])
def test_each_representation_within_its_stated_accuracy(float32_reference, smollm2_path, representation):
    """bench/accuracy.py's figures, held to its BOUNDS."""
    token_lists = [float32_reference.tokenizer.encode(text) for text in TEXTS]
    with loaded(representation, str(smollm2_path)) as other:
        figures = logit_figures(float32_reference.model, other.model, token_lists)
    bounds = BOUNDS[representation]
    assert figures["top1"] >= bounds["top1"] and figures["mean_kl"] <= bounds["mean_kl"], figures


def test_a_broken_int4_kernel_breaks_the_bounds(float32_reference, smollm2_path):
    """The bounds are tight enough to catch a kernel that is slightly wrong: scales off by 3%."""
    other = LLM.load(str(smollm2_path), dtype="int4")
    for block in other.model.layers:
        for layer in (block.attn.wq, block.attn.wo, block.ffn.w1, block.ffn.w2):
            layer.scales_and_zeros[..., 0] *= 1.03
    token_lists = [float32_reference.tokenizer.encode(text) for text in TEXTS]
    figures = logit_figures(float32_reference.model, other.model, token_lists)
    bounds = BOUNDS["int4"]
    assert figures["top1"] < bounds["top1"] or figures["mean_kl"] > bounds["mean_kl"], figures


def test_the_same_prompt_again_samples_the_same_text(tiny_int4):
    """A prompt run before starts from its stored KV and last logits, with no prefill: a seed reproduces its text
    even though a prefill split differently would round differently in bfloat16."""
    llm = LLM(*tiny_int4, engine=EngineConfig(max_seq_len=128))
    prompt = "Pack my box with five dozen liquor jugs! " * 2
    first = llm.generate(prompt, max_new_tokens=24, temperature=1.0, seed=5, logit_bias=NO_STOP)
    reused_before = llm.engine.prefix_cache.tokens_reused
    again = llm.generate(prompt, max_new_tokens=24, temperature=1.0, seed=5, logit_bias=NO_STOP)
    assert again == first
    assert llm.engine.prefix_cache.tokens_reused - reused_before == llm.count_tokens(prompt)
