"""The one product torch has no fast CPU kernel for: float rows times weights in GGUF's Q8_0 layout (int8, one
float32 scale per 32 inputs), which is how SmolLM2's GGUF stores its output projection (the tied embedding).

That projection is 28M of the model's 135M weights, read whole for every decoded token. torch offers it in
float16 (56 MB read, 2.0 ms a token at one row on this project's 2-core test machine) or through
`_weight_int8pack_mm` (one scale per output row: 4% of top-1 agreement lost, and no faster). cpu_kernels.c
reads the 28 MB of int8 and the scales once, widens them to float32 in registers and keeps the rows in float32:
1.0 ms, and exactly the file's weights. (An int8 kernel for the 4-bit layers too was tried: no faster than
torch's there, inside a decode step, so it was not kept.)

The C file is compiled with the system's C compiler ($CC, else cc) at first use, to a library cached under
settings.cache_dir("kernels") by the source's and the compiler's hash (0.3 s, once), and called through ctypes.
It needs AVX-512 (every CPU that runs the int4 representation has it) and OpenMP, and shares torch's OpenMP
runtime (the same libgomp.so.1, already loaded) and thread count. Where there is no compiler, no AVX-512, or
$LLMKIT_CPU_KERNELS is "off", `int8_matmul` returns None and the caller computes with torch, with a warning
once that says what it costs.
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
FLAGS = ["-O3", "-mavx512f", "-mfma", "-fopenmp", "-shared", "-fPIC"]
NEEDED_CPU_FLAGS = frozenset({"avx512f", "fma"})
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


def available() -> bool:
    """Whether int8_matmul runs here (builds the library on first call)."""
    return _library() is not None


@functools.cache
def _library() -> ctypes.CDLL | None:
    from core.quant import cpu_flags  # core.quant imports this module

    why = None
    if (settings.env(settings.CPU_KERNELS) or "").lower() in ("off", "0", "false", "no"):
        return None  # asked for: no warning
    if not cpu_flags() >= NEEDED_CPU_FLAGS:
        why = "this CPU has no AVX-512"
    elif shutil.which(os.environ.get("CC") or "cc") is None:
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
            return library
    warnings.warn(f"llmkit: the output projection runs on torch's float16 kernel, about 1 ms a token slower on "
                  f"SmolLM2: {why}", stacklevel=3)
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
