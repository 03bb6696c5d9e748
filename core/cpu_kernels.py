"""CPU kernels torch lacks for the int4 representation, in C (cpu_kernels.c). Figures: SmolLM2 on this project's
2-core test machine (AVX512-BF16), against what torch offered.

- `int8_matmul`: float rows times weights in GGUF's Q8_0 layout (int8, one float32 scale per 32 inputs), how
  SmolLM2's GGUF stores its output projection (the tied embedding, 28M of its 135M weights, read whole for every
  decoded token). torch has it in float16 (56 MB read: 2.0 ms a token) or through `_weight_int8pack_mm` (one
  scale per output row: 4% of top-1 agreement lost, and no faster). Here the 28 MB of int8 are read once and
  widened to float32 in registers: 0.9 ms, with exactly the file's weights.
- `attend_one`: a decode step's attention, one query per head over the KV cache. SDPA's CPU kernel is built for
  many queries: 35 us a layer at 100 keys, 117 at 1,200; here 10 and 27 (float32 scores and sums, parts of
  256 keys merged by their maxima, as in flash-decoding).
- `attend_causal`: a prefill's causal attention, flash-style (blocks of 64 keys, running maxima and sums), its
  products as bfloat16 pairs summed in float32 (vdpbf16ps): 4.3 ms a layer at 1,024 tokens against SDPA's 12.8.
- `rms_norm` (every bfloat16 norm on CPU) and, for a decode step, `residual_rms_norm`, `rope_into_cache` and
  `silu_mul` (core.decode_step calls them directly): one call each where torch took several ops, 1.3 -> 0.3 ms a
  step, with the modules' roundings, so a sequence decodes to the same bits alone, in a batch (attention row by
  row through `attend_one`, core.attention.query_rows) and through the modules.
- `unpack_int4`: torch's packed int4 weights to bfloat16 for a prompt's dense products: 4 ms for every layer
  against 130 ms with torch's ops, and the int4 kernel's own values to the bit.
- Tried and not kept: an int8 (VNNI) kernel for the 4-bit layers' products: no faster than torch's inside a
  decode step.

The C file is compiled with the system's C compiler ($CC, else cc) at first use, to a library cached under
settings.cache_dir("kernels") by the source's, flags' and compiler's hash (about 1 s, once), and called through
ctypes. It needs AVX-512 with BF16 (the int4 representation needs it anyway) and OpenMP; it shares torch's
OpenMP runtime (the same libgomp.so.1, already loaded) and thread count. Where there is no compiler, no such
CPU, or $LLMKIT_CPU_KERNELS is "off", every function returns None and the callers use torch, with a warning
once that says so.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import torch

from core import disk_cache, settings

SOURCE = Path(__file__).with_name("cpu_kernels.c")
LIBRARY = "cpu_kernels.so"
FLAGS = ["-O3", "-mavx512f", "-mavx512bf16", "-mfma", "-fopenmp", "-shared", "-fPIC"]
NEEDED_CPU_FLAGS = frozenset({"avx512f", "avx512_bf16"})  # with FMA, which every AVX-512 CPU has
MAX_DIM, MAX_REP = 256, 16  # attend_one's bounds on the head size and on query heads per KV head (cpu_kernels.c)
GROUP = 32  # inputs per scale (Q8_0's block; cpu_kernels.c's GROUP)
_INT64, _POINTER = ctypes.c_int64, ctypes.c_void_p


def int8_matmul(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor | None:
    """x (M, K) @ W^T in float32, W (N, K) = q (int8) * scales (float32, (N, K / GROUP)) per block of GROUP
    inputs; None when the kernel is not available here (then compute with torch)."""
    library = _library()
    if library is None:
        return None
    if q.dtype != torch.int8 or scales.dtype != torch.float32 or not (q.is_contiguous() and scales.is_contiguous()):
        raise TypeError("int8_matmul needs contiguous int8 weights and float32 scales")
    (n, k), rows = q.shape, x.float().reshape(-1, q.shape[1]).contiguous()
    if k % GROUP or scales.shape != (n, k // GROUP):
        raise ValueError(f"int8_matmul: weights {tuple(q.shape)} and scales {tuple(scales.shape)} do not fit "
                         f"blocks of {GROUP}")
    y = torch.empty(len(rows), n)
    library.int8_matmul(rows.data_ptr(), len(rows), k, q.data_ptr(), scales.data_ptr(), n, y.data_ptr(),
                        torch.get_num_threads())
    return y


def attend_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    """softmax(q k^T / sqrt(D)) v for one sequence's one query per head, which sees every key: q (1, H, 1, D) or
    (1, Hkv, H / Hkv, D) (the query heads of a KV head together), k and v (1, Hkv, S, D) as the KV cache holds
    them (each head's S slots contiguous), all bfloat16. Returns y shaped like q, or None when the kernel is not
    available here or the tensors are not of that form (then use SDPA)."""
    if not _bfloat16_on_cpu(q, k, v):
        return None
    library = _library()
    heads, kv_heads, dim = q.shape[1] * q.shape[2], k.shape[1], q.shape[-1]
    if (library is None or q.shape[0] != 1 or q.numel() != heads * dim or not q.is_contiguous() or heads % kv_heads
            or heads // kv_heads > MAX_REP or dim % 16 or dim > MAX_DIM or k.shape != v.shape
            or k.stride() != v.stride() or k.stride()[2:] != (dim, 1)):
        return None
    y = torch.empty_like(q)
    if library.attend_one(q.data_ptr(), k.data_ptr(), v.data_ptr(), heads, kv_heads, k.shape[2], k.stride(1), dim,
                          y.data_ptr(), torch.get_num_threads()):
        raise MemoryError("attend_one: no memory for its scratch")
    return y


def attend_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    """Causal attention of one sequence's T queries, at the last T of S key positions (a prefill from the start,
    or after S - T cached slots): q (1, H, T, D), k and v (1, Hkv, S, D), bfloat16, each row's D values
    contiguous, k and v alike in layout. Returns (1, H, T, D) (a view of a (1, T, H, D) tensor, the layout the
    output projection reads), or None when the kernel is not available here or the tensors are not of that form."""
    if not _bfloat16_on_cpu(q, k, v):
        return None
    library = _library()
    if library is None:
        return None
    batch, heads, queries, dim = q.shape
    kv_heads, length = k.shape[1], k.shape[2]
    if (batch != 1 or k.shape != v.shape or k.stride() != v.stride() or q.stride(3) != 1 or k.stride(3) != 1
            or heads % kv_heads or dim % 32 or dim > MAX_DIM or not 0 < queries <= length):
        return None
    out = torch.empty(1, queries, heads, dim, dtype=torch.bfloat16)
    if library.attend_causal(q.data_ptr(), q.stride(1), q.stride(2), k.data_ptr(), v.data_ptr(), k.stride(1),
                             k.stride(2), heads, kv_heads, queries, length, dim, out.data_ptr(),
                             torch.get_num_threads()):
        raise MemoryError("attend_causal: no memory for its packed keys and values")
    return out.transpose(1, 2)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor | None:
    """RMSNorm over the last dimension of bfloat16 x, in float32 and rounded as core.model.rms_norm rounds, or None
    when the kernel is not available here or x is not of that form. core.model.rms_norm takes it for every bfloat16
    row on CPU, so a decode step (which calls residual_rms_norm) and a batch or a prompt round alike."""
    if not _bfloat16_on_cpu(x, weight):
        return None
    library = _library()
    if library is None or weight.shape != x.shape[-1:] or not weight.is_contiguous():
        return None
    rows = x.contiguous()
    out = torch.empty_like(rows)
    library.rms_norm_rows(rows.data_ptr(), weight.data_ptr(), rows.numel() // x.shape[-1], x.shape[-1], eps,
                          out.data_ptr(), torch.get_num_threads())
    return out


def _bfloat16_on_cpu(*tensors: torch.Tensor) -> bool:
    """Whether the kernels could take these tensors, asked before the library is: float32 models, which never use
    it, must not build it or warn that it is missing."""
    return all(t.dtype == torch.bfloat16 and t.device.type == "cpu" for t in tensors)


def unpack_int4(packed: torch.Tensor, scales_and_zeros: torch.Tensor) -> torch.Tensor | None:
    """W^T (K, N) in bfloat16 from torch's CPU int4 packing (core.quant.unpack_int4 reads the same layout, with
    torch's ops, 10x slower), or None when the kernel is not available here."""
    library = _library()
    if library is None:
        return None
    groups, n, _ = scales_and_zeros.shape
    k = groups * GROUP
    if packed.dtype != torch.uint8 or packed.shape != (n, k // 2) or n % 64 or not (
            packed.is_contiguous() and scales_and_zeros.is_contiguous()):
        raise ValueError(f"unpack_int4: packed {tuple(packed.shape)} does not fit scales "
                         f"{tuple(scales_and_zeros.shape)}")
    out = torch.empty(k, n, dtype=torch.bfloat16)
    library.unpack_int4(packed.data_ptr(), scales_and_zeros.data_ptr(), k, n, out.data_ptr(), torch.get_num_threads())
    return out


def available() -> bool:
    """Whether the kernels run here (builds the library on first call)."""
    return _library() is not None


def decode_glue() -> ctypes.CDLL | None:
    """The library, whose residual_rms_norm, rope_into_cache and silu_mul core.decode_step calls directly (a
    decode step is some 200 of these small steps: no per-call checks), or None where it is not available."""
    return _library()


@functools.cache
def _library() -> ctypes.CDLL | None:
    from core.quant import cpuinfo_flags  # core.quant imports this module

    why = None
    if (settings.env(settings.CPU_KERNELS) or "").lower() in ("off", "0", "false", "no"):
        return None  # asked for: no warning
    if not cpuinfo_flags() >= NEEDED_CPU_FLAGS:
        why = "this CPU lacks AVX-512 with BF16"
    elif shutil.which(_compiler()[0]) is None:
        why = "no C compiler was found (install gcc, or set $CC)"
    else:
        try:
            entry = disk_cache.ensure(settings.cache_dir("kernels") / _build_key(), _build)
            library = ctypes.CDLL(str(entry / LIBRARY))
        except (OSError, subprocess.SubprocessError) as error:
            why = f"building core/cpu_kernels.c failed ({str(error).strip()[-300:]})"
        else:
            library.int8_matmul.argtypes = [_POINTER, _INT64, _INT64, _POINTER, _POINTER, _INT64, _POINTER,
                                            ctypes.c_int]
            library.int8_matmul.restype = None
            library.attend_one.argtypes = [_POINTER, _POINTER, _POINTER, _INT64, _INT64, _INT64, _INT64, _INT64,
                                           _POINTER, ctypes.c_int]
            library.attend_one.restype = ctypes.c_int
            library.attend_causal.argtypes = [_POINTER, _INT64, _INT64, _POINTER, _POINTER, _INT64, _INT64, _INT64,
                                              _INT64, _INT64, _INT64, _INT64, _POINTER, ctypes.c_int]
            library.attend_causal.restype = ctypes.c_int
            library.rms_norm_rows.argtypes = [_POINTER, _POINTER, _INT64, _INT64, ctypes.c_float, _POINTER,
                                              ctypes.c_int]
            library.rms_norm_rows.restype = None
            library.residual_rms_norm.argtypes = [_POINTER, _POINTER, _POINTER, _INT64, ctypes.c_float, _POINTER]
            library.rope_into_cache.argtypes = [_POINTER, _POINTER, _POINTER, _INT64, _INT64, _INT64, _POINTER,
                                                _POINTER, _INT64]
            library.silu_mul.argtypes = [_POINTER, _INT64, _POINTER]
            for name in ("residual_rms_norm", "rope_into_cache", "silu_mul"):
                getattr(library, name).restype = None
            library.unpack_int4.argtypes = [_POINTER, _POINTER, _INT64, _INT64, _POINTER, ctypes.c_int]
            library.unpack_int4.restype = None
            return library
    warnings.warn(f"llmkit: torch's kernels instead of core/cpu_kernels.c, so decoding is about 20% and prefilling "
                  f"about 50% slower: {why}", stacklevel=3)
    return None


def _compiler() -> list[str]:
    return [os.environ.get("CC") or "cc"]


def _build_key() -> str:
    """The source, flags and compiler version: a change to any builds a new library."""
    version = subprocess.run([*_compiler(), "--version"], capture_output=True, text=True, timeout=30).stdout
    return hashlib.sha256("\0".join([SOURCE.read_text(), *FLAGS, version]).encode()).hexdigest()[:16]


def _build(staging: Path) -> None:
    done = subprocess.run([*_compiler(), *FLAGS, str(SOURCE), "-o", str(staging / LIBRARY)], capture_output=True,
                          text=True, timeout=120)
    if done.returncode:
        raise subprocess.SubprocessError(done.stderr or f"exit status {done.returncode}")
