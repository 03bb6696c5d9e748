"""Ring attention: peak memory per process and wall time of a prefill split over P processes (core.ring_attention).

Models: a tiny random one with the embedded SmolLM2's attention shape (9 query heads, 3 key/value heads, head dim
64) but 2 layers, a 256-wide MLP and a 512-token vocabulary, so that attention is most of the work; and SmolLM2
itself (float32). Each (model, tokens, P) runs in fresh processes on gloo: the prefill's wall time (rank 0, from
a barrier to the gathered last-position logits), each process's peak RSS (getrusage maxrss) and how much it grew
during the prefill, and the largest difference of the last position's logits from `model.forward` on one process,
which runs first in its own process (its row "forward", SDPA's fused causal kernel) as the reference.
Run: .venv/bin/python -m bench.ring [--procs 1,2,4] [--tokens 2048,8192,16384] [--smollm2-tokens 2048]
"""

from __future__ import annotations

import os
import resource
import time

import torch
import torch.distributed as dist

from bench import results
from core.config import ModelConfig
from core.model import Transformer
from core.ring_attention import ring_prefill, run_ranks

TINY = ModelConfig(dim=576, n_layers=2, n_heads=9, n_kv_heads=3, ffn_dim=256, vocab_size=512, max_seq_len=1 << 15,
                   rope_theta=100000.0)
THREADS = 1  # per process in every run: the rows compare processes, not thread pools


def tiny_model() -> Transformer:
    """The same random weights in every process (seeded): small enough that a wrong merge shows in the logits."""
    generator = torch.Generator().manual_seed(0)
    model = Transformer(TINY)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(1.0 if "norm" in name else 0.05 * torch.randn(param.shape, generator=generator))
    return model.eval()


def load(model_name: str) -> Transformer:
    if model_name == "tiny":
        return tiny_model()
    from core.loading import load_model

    return load_model(None, dtype="float32")[0]


def rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(model_name: str, n_tokens: int, ring: bool) -> dict:
    """One process's figures for a prefill of `n_tokens` random tokens; rank 0's also hold the last logits."""
    torch.set_num_threads(THREADS)
    model = load(model_name)
    tokens = torch.randint(0, model.config.vocab_size, (1, n_tokens), generator=torch.Generator().manual_seed(1))
    positions = torch.arange(n_tokens)
    with torch.inference_mode():  # reads every weight in (a loaded model's are mapped from its file, not yet read)
        model(tokens[:, :8], positions[:8])
    before = rss_mb()
    dist.barrier()
    started = time.perf_counter()
    with torch.inference_mode():
        logits = (ring_prefill(model, tokens, positions, logits_to_keep=1) if ring
                  else model(tokens, positions, logits_to_keep=1))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"seconds": seconds, "rss_before_mb": before, "peak_mb": peak, "logits": logits}


def run(model_name: str, n_tokens: int, procs: list[int]) -> list[dict]:
    """The single-process forward, then ring prefills on each number of processes, as table rows."""
    rows, reference = [], None
    for world in [0, *procs]:  # 0: model.forward on one process
        ranks = run_ranks(measure, max(world, 1), model_name, n_tokens, world > 0, timeout_s=600)
        logits = ranks[0].pop("logits")[0, -1]
        reference = logits if reference is None else reference
        rows.append({"model": model_name, "tokens": n_tokens, "procs": world or 1, "ring": world > 0,
                     "seconds": ranks[0]["seconds"],
                     "peak_mb": max(r["peak_mb"] for r in ranks),
                     "growth_mb": max(r["peak_mb"] - r["rss_before_mb"] for r in ranks),
                     "max_abs_logit_diff": float((logits - reference).abs().max()),
                     "same_top1": int(logits.argmax()) == int(reference.argmax())})
        print(rows[-1], flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | tokens | run | prefill s | peak RSS per process, MB | RSS growth in the prefill per process, "
             "MB | max abs diff, last logits vs forward | same top-1 |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        run_name = f"ring, {r['procs']} process{'es' if r['procs'] > 1 else ''}" if r["ring"] else "forward"
        lines.append(f"| {r['model']} | {r['tokens']:,} | {run_name} | {r['seconds']:.2f} "
                     f"| {r['peak_mb']:.0f} | {r['growth_mb']:.0f} | {r['max_abs_logit_diff']:.2e} "
                     f"| {'yes' if r['same_top1'] else 'no'} |")
    return "\n".join(lines)


NOTE = """\
RSS growth is what the prefill itself took on top of the process (torch, the weights, read in by an 8-token forward
first); a process's peak RSS adds those, and for SmolLM2 is mostly its float32 weights (540 MB, in every process).
The growth is a lower bound: the allocator reuses memory freed before (loading SmolLM2 frees more than its prefill
takes on 4 processes). "forward" is `model(tokens, positions)` on one process (SDPA's fused causal kernel), the
reference the logits are compared with. The ring's attention is plain float32 matrix products in query tiles of
512 positions merged by log-sum-exp, which run unchanged on any backend but take up to twice SDPA's time on one
process; a fused kernel that returns the log-sum-exp (flash-attention's, on GPUs) would close that gap.

Every process runs one torch thread. This machine has 2 cores, shared with other work while this ran (load average
{load}): 2 processes can at best halve the time of 1, and 4 share the same 2 cores, so wall time here says little;
memory per process shows the design. Each step a rank attends its 2 chunks of T/(2P) queries to one received block
of T/P keys with the masked half skipped, so its attention work is ~T^2/(2P^2) query-key pairs per step and
~T^2/(2P) over the P steps, the same on every rank (zigzag layout); its memory is O(T/P): its tokens' activations,
two key/value blocks, one score tile. On P GPUs (NCCL) the prediction is attention time falling as 1/P and
activation memory per GPU as 1/P (the weights stay replicated), as long as each step's compute hides the transfer
of the next key/value block: per step a rank does ~1152 (T/P)^2 flops (SmolLM2's 9 heads x 64 dims) and sends
768 (T/P) bytes (3 key/value heads, bfloat16), so at ~200 TFLOP/s and ~200 GB/s (NVLink) the transfer is hidden
once T/P exceeds ~700 tokens."""


def main() -> None:
    parser = results.parser("ring", __doc__)
    parser.add_argument("--procs", default="1,2,4", help="numbers of processes, comma-separated (default 1,2,4)")
    parser.add_argument("--tokens", default="2048,8192,16384", help="tiny model's prompt lengths (default 2k/8k/16k)")
    parser.add_argument("--smollm2-tokens", type=int, default=2048, help="SmolLM2's prompt length; 0 skips it")
    args = parser.parse_args()
    procs = [int(p) for p in args.procs.split(",")]
    load_before = os.getloadavg()[0]
    rows = [row for n in map(int, args.tokens.split(",")) for row in run("tiny", n, procs)]
    if args.smollm2_tokens:
        rows += run("SmolLM2", args.smollm2_tokens, procs)
    load = f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    results.write("ring", "Ring attention: a prefill split over P processes (gloo, CPU)",
                  table(rows) + "\n\n" + NOTE.format(load=load),
                  {"tiny_config": TINY.to_dict(), "rows": rows, "load": load}, args.results)


if __name__ == "__main__":
    main()
