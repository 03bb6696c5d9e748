"""The "int4" representation: 4-bit linear layers through torch's CPU weight-only kernel, bfloat16 activations.

Decoding one token reads every weight once, so on a CPU its speed is the weights' size: SmolLM2's 135M
parameters are 540 MB in float32 and 60 MB in 4 bits. A Q4_0 / Q4_1 GGUF already holds its linear
layers as 4-bit integers in groups of 32 along the input (w = d*q + m, q in 0..15), which is exactly
what `torch.ops.aten._weight_int4pack_mm_for_cpu` computes with (w = (q - 8)*scale + zero). Its fast
path wants bfloat16 activations (float32 or float16 ones take 20-40x longer), so this representation
computes in bfloat16 with float32 norms, softmax and logits, like dtype="bfloat16".

`int4_groups` finds a weight's groups again from its dequantised float32 values and says whether they
are exact (for a Q4_1 or Q4_0 file they are: the group's extremes are q = 0 and 15, or -8). Only the
scales and zeros are rounded, to bfloat16 (relative error 2^-9, against the 1/15 step of the grid).

The output projection (the tied embedding: 28M of SmolLM2's parameters, Q8_0 in the file) keeps Q8_0's
layout, int8 with a float32 scale per 32 inputs (`Int8Output`; `int8_groups` finds the file's values
again, exactly): a decode step multiplies its row or few rows through core.cpu_kernels (1.0 ms at one row,
against 2.0 ms for the float16 table it replaces), and the token embedding reads its rows. Many rows at once
(a batch of full-sequence logits) go through a bfloat16 copy, made at the first such call: from a dozen rows on,
bfloat16's matrix product beats a pass per 8 rows. Where the kernel cannot be built, a float16 copy serves one or
two rows (at one row float16's product takes half bfloat16's time: CPUs without AVX512-FP16 have no fast float16
matrix product).

Needs a CPU with bfloat16 instructions (AVX512-BF16 or AMX): `bfloat16_kernels` says whether this one has
them (elsewhere dtype="auto" stays float32).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core import cpu_kernels, settings
from core.model import Transformer

GROUP = 32  # inputs per scale and zero: GGUF's block for Q4_0 / Q4_1
CPU_FLAGS = "LLMKIT_CPU_FLAGS"  # overrides the flags read from /proc/cpuinfo (to test, or on an odd VM)
BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
INT8_ROWS = 8  # Int8Output: up to this many rows through core.cpu_kernels, more through a bfloat16 copy
FLOAT16_ROWS = 2  # Int8Output without core.cpu_kernels: up to this many rows through a float16 copy
# Int4Linear: from this many rows on, the weights unpacked to bfloat16 and a plain product; the unpacking by
# core.cpu_kernels takes 4 ms for SmolLM2's layers, by torch's ops 130 ms, which moves the crossover with the
# int4 kernel (a GEMV kernel: at 256 rows it takes 2.3x the unpacked product) from about 300 rows to 16
UNPACKED_ROWS, BFLOAT16_ROWS = 16, 320
PACK_BLOCK = 64  # outputs per block of the CPU kernel's int4 packing (see unpack_int4)


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags: $LLMKIT_CPU_FLAGS (space-separated) if set, else the CPU's own (`cpuinfo_flags`)."""
    forced = settings.env(CPU_FLAGS)
    return frozenset(forced.lower().split()) if forced is not None else cpuinfo_flags()


@functools.cache
def cpuinfo_flags() -> frozenset[str]:
    """The flags /proc/cpuinfo lists (empty elsewhere): what core.cpu_kernels checks before it runs code that would
    fault on a CPU without them, whatever $LLMKIT_CPU_FLAGS says."""
    if platform.system() != "Linux":
        return frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def bfloat16_kernels() -> bool:
    """Whether this CPU multiplies bfloat16 natively, which the int4 kernel's fast path needs."""
    return bool(cpu_flags() & BFLOAT16_FLAGS)


def int4_groups(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """(q (N, K) int32 in 0..15, scale (N, K/GROUP), zero (N, K/GROUP), exact) with weight ~ (q - 8)*scale + zero.

    Each group of GROUP inputs gets the grid through its minimum and maximum (Q4_1's), or, when that
    does not reproduce the group, the symmetric grid whose step is its largest magnitude / 8 (Q4_0's).
    `exact`: every weight is on its grid (to float32 rounding), as for weights read from a 4-bit file."""
    n, k = weight.shape
    if k % GROUP:
        raise ValueError(f"int4 needs the input size to be a multiple of {GROUP}, got {k}")
    groups = weight.float().view(n, k // GROUP, GROUP)
    low, high = groups.amin(-1), groups.amax(-1)
    scale = (high - low) / 15
    zero = low + 8 * scale
    q, error = _on_grid(groups, scale, zero)
    # Q4_0: the value of largest magnitude is q = 0 (-8 steps); the grid has no zero offset.
    extreme = torch.where(high.abs() > low.abs(), high, low)
    sym_scale = -extreme / 8
    sym_q, sym_error = _on_grid(groups, sym_scale, torch.zeros_like(sym_scale))
    tolerance = 1e-6 * groups.abs().amax(-1).clamp_min(1e-30)
    use_sym = (error > tolerance) & (sym_error <= tolerance)
    q = torch.where(use_sym[..., None], sym_q, q)
    scale, zero = torch.where(use_sym, sym_scale, scale), torch.where(use_sym, 0.0, zero)
    exact = bool(((error <= tolerance) | use_sym).all())
    return q.view(n, k), scale, zero, exact


def _on_grid(groups, scale, zero) -> tuple[torch.Tensor, torch.Tensor]:
    """q in 0..15 nearest to each value on the grid (q - 8)*scale + zero, and each group's largest error."""
    step = torch.where(scale == 0, 1.0, scale)[..., None]
    q = ((groups - zero[..., None]) / step + 8).round().clamp(0, 15)
    error = ((q - 8) * scale[..., None] + zero[..., None] - groups).abs().amax(-1)
    return q.to(torch.int32), error


class Int4Linear(nn.Module):
    """y = x W^T (+ b) with W in 4 bits, groups of GROUP inputs; x in bfloat16."""

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        # Filled by `from_weight` or by loading a state dict; the kernel's packed layout is torch's own.
        self.register_buffer("packed", torch.empty(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("scales_and_zeros", torch.empty(in_features // GROUP, out_features, 2,
                                                             dtype=torch.bfloat16))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=torch.bfloat16)) if bias else None

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[Int4Linear, bool]:
        """The layer, and whether it computes with `weight`'s exact values (see int4_groups)."""
        q, scale, zero, exact = int4_groups(weight)
        layer = cls(weight.shape[1], weight.shape[0], bias is not None)
        layer.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        layer.scales_and_zeros = torch.stack([scale, zero], -1).transpose(0, 1).contiguous().to(torch.bfloat16)
        if bias is not None:
            layer.bias = nn.Parameter(bias.to(torch.bfloat16), requires_grad=False)
        return layer, exact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if len(rows) >= (UNPACKED_ROWS if cpu_kernels.available() else BFLOAT16_ROWS) and unpacks(self.out_features):
            y = rows @ unpack_int4(self.packed, self.scales_and_zeros)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, GROUP, self.scales_and_zeros)
        y = y.view(*x.shape[:-1], self.out_features)
        return y + self.bias if self.bias is not None else y


def unpack_int4(packed: torch.Tensor, scales_and_zeros: torch.Tensor) -> torch.Tensor:
    """W^T (K, N) in bfloat16 from the kernel's packing of an (N, K) weight: blocks of PACK_BLOCK outputs, each
    stored as (K, PACK_BLOCK / 2) bytes whose low nibble is output j of the block and whose high one output
    j + PACK_BLOCK / 2. `unpacks` checks that this torch packs so. core.cpu_kernels unpacks where it runs (the
    kernel's own values, to the bit); torch's ops elsewhere (rounding each step to bfloat16: within an ulp)."""
    unpacked = cpu_kernels.unpack_int4(packed, scales_and_zeros)
    if unpacked is not None:
        return unpacked
    k = scales_and_zeros.shape[0] * GROUP
    n = scales_and_zeros.shape[1]
    blocks = packed.view(n // PACK_BLOCK, k, PACK_BLOCK // 2)
    q = torch.empty(k, n // PACK_BLOCK, 2, PACK_BLOCK // 2, dtype=torch.uint8)
    torch.bitwise_and(blocks, 15, out=q[:, :, 0].permute(1, 0, 2))
    torch.bitwise_right_shift(blocks, 4, out=q[:, :, 1].permute(1, 0, 2))
    scale, zero = scales_and_zeros.unbind(-1)  # (K / GROUP, N) each
    # (q - 8) * scale + zero, as q * scale + (zero - 8 * scale): one fused op over the weights
    return torch.addcmul((zero - 8 * scale)[:, None], q.view(k // GROUP, GROUP, n).to(torch.bfloat16),
                         scale[:, None]).view(k, n)


@functools.cache
def _packs_in_blocks() -> bool:
    """Whether this torch packs int4 weights as unpack_int4 reads them (a private layout, so checked once)."""
    n, k = 2 * PACK_BLOCK, 2 * GROUP
    q = torch.randint(0, 16, (n, k), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    ones = torch.ones(k // GROUP, n, 2, dtype=torch.bfloat16)
    ones[..., 1] = 8.0  # scale 1, zero 8: w = q
    return packed.shape == (n, k // 2) and torch.equal(unpack_int4(packed, ones), q.T.to(torch.bfloat16))


def unpacks(out_features: int) -> bool:
    """Whether a layer of `out_features` outputs can be unpacked (unpack_int4) on this torch."""
    return out_features % PACK_BLOCK == 0 and _packs_in_blocks()


def int8_groups(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q (N, K) int8, scales (N, K / 32) float32) with weight ~ q * scale per group of 32 inputs (Q8_0's block,
    cpu_kernels.GROUP): Q8_0's rounding (scale = largest magnitude / 127). Exact for weights read from a Q8_0
    file, whose float16 scale times 127 is exact in float32; a rounding of others, finer than bfloat16's (see
    bench/accuracy.py)."""
    groups = weight.float().unflatten(-1, (-1, cpu_kernels.GROUP))
    scales = groups.abs().amax(-1) / 127
    q = (groups / torch.where(scales == 0, 1.0, scales)[..., None]).round().clamp(-127, 127)
    return q.to(torch.int8).flatten(-2), scales


class Int8Output(nn.Module):
    """The output projection in Q8_0's layout: int8 weights, a float32 scale per 32 inputs (see the module doc);
    float32 logits. Its float copies are made at first use and kept: they do not follow later changes to `q` or
    `scales`."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.register_buffer("q", torch.empty(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.empty(out_features, in_features // cpu_kernels.GROUP,
                                                   dtype=torch.float32))
        self.copies: dict[torch.dtype, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.q.shape[1])
        y = cpu_kernels.int8_matmul(rows, self.q, self.scales) if len(rows) <= INT8_ROWS else None
        if y is None:
            dtype = torch.float16 if len(rows) <= FLOAT16_ROWS else torch.bfloat16
            y = F.linear(rows.to(dtype), self.copy(dtype)).float()
        return y.view(*x.shape[:-1], -1)

    def copy(self, dtype: torch.dtype) -> torch.Tensor:
        if dtype not in self.copies:
            self.copies[dtype] = self.lookup(torch.arange(len(self.q))).to(dtype)
        return self.copies[dtype]

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """The weights' rows `ids` in float32, shape (*ids.shape, in_features): the tied token embedding."""
        return (self.q[ids].float().unflatten(-1, (-1, cpu_kernels.GROUP)) * self.scales[ids][..., None]).flatten(-2)


class TiedEmbedding(nn.Module):
    """The token embedding of a checkpoint that ties it to the output projection: the Int8Output's rows. It holds
    no tensor of its own, so the table is stored once, as the output's."""

    def __init__(self, output: Int8Output):
        super().__init__()
        self.lookup = output.lookup  # a bound method, not a submodule

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lookup(ids)


def to_int4(model: Transformer) -> bool:
    """Turn `model` (float weights) into the int4 representation in place; True when every linear layer kept its
    exact weights. The q, k and v projections become one layer, and SwiGLU's gate and up another (core.model
    reads them so): fewer, larger products. Norms and the position table go to bfloat16; the output projection
    goes to int8 (Int8Output), and the token embedding reads its rows when the checkpoint ties them, else keeps a
    float16 table (a lookup needs no fast kernel)."""
    exact = True
    for owner, fused in _fusions(model):
        weight = torch.cat([getattr(owner, name).weight.detach() for name in fused])
        biases = [getattr(owner, name).bias for name in fused]
        bias = torch.cat([b.detach() for b in biases]) if biases[0] is not None else None
        layer, layer_exact = Int4Linear.from_weight(weight, bias)
        _replace(owner, fused, layer)
        exact &= layer_exact
    _output_tables(model, model.output.weight.detach(), model.tok_embeddings.weight.detach())
    for parameter in model.parameters():
        if parameter.dtype == torch.float32:
            parameter.data = parameter.data.to(torch.bfloat16)
    return exact


def int4_skeleton(model: Transformer) -> Transformer:
    """`model` (uninitialised) with the int4 representation's modules, for `load_state_dict(assign=True)`."""
    for owner, fused in _fusions(model):
        first = getattr(owner, fused[0])
        out_features = sum(getattr(owner, name).out_features for name in fused)
        _replace(owner, fused, Int4Linear(first.in_features, out_features, first.bias is not None))
    _output_tables(model, None, None)
    return model


def _fusions(model: Transformer):
    """(module, names of the linear layers that become one), for every linear layer of every block."""
    for block in model.layers:
        yield block.attn, ("wq", "wk", "wv")
        yield block.attn, ("wo",)
        ffn = block.ffn
        yield (ffn, ("w1", "w3")) if ffn.w3 is not None else (ffn, ("w1",))
        yield ffn, ("w2",)


def _replace(owner: nn.Module, names: tuple[str, ...], layer: Int4Linear) -> None:
    """`layer` in place of the first of `names`; the others None (core.model then splits the first's output)."""
    setattr(owner, names[0], layer)
    for name in names[1:]:
        setattr(owner, name, None)


def _output_tables(model: Transformer, output: torch.Tensor | None, embeddings: torch.Tensor | None) -> None:
    """The output projection as an Int8Output and the token embedding (its rows when tied, else a float16 table),
    from these weights (or empty)."""
    config = model.config
    model.output = Int8Output(config.dim, config.vocab_size)
    if output is not None:
        model.output.q, model.output.scales = int8_groups(output)
    if config.tie_embeddings:
        model.tok_embeddings = TiedEmbedding(model.output)
    else:
        table = embeddings.to(torch.float16) if embeddings is not None else torch.empty(
            config.vocab_size, config.dim, dtype=torch.float16)
        model.tok_embeddings.weight = nn.Parameter(table, requires_grad=False)
