"""Ring attention: exact attention over a sequence split across P processes on torch.distributed.

Each rank holds one shard of the queries, keys and values. The key/value shards travel round the ring (rank r
sends to r + 1 and receives from r - 1) P - 1 times; a rank attends its queries to the shard it holds while the
next one is in flight, and merges the partial results with the online-softmax (log-sum-exp) update in float32.
No rank ever holds the whole sequence's keys or a T x T score matrix, so the memory a rank needs falls as 1/P
and the context grows with the number of devices (Liu et al. 2023, "Ring Attention with Blockwise Transformers").

Causal load balance: the sequence is padded to 2P equal chunks and rank r holds chunks r and 2P - 1 - r (the
"zigzag" layout, `Zigzag`), so at every step each rank has the same number of unmasked query-key pairs to
compute; chunk pairs the mask hides entirely are skipped, and padding is never attended. Grouped-query
attention: the query heads of a group become extra query rows of their shared key/value head, no K/V copy.
The same code runs on gloo (CPU) and NCCL (one GPU per rank): tensors stay on the device they come on.

`ring_prefill` runs a core.model.Transformer's layers this way; `run_ranks` starts P processes in a process
group whose timeout makes every rank raise when one fails. Does not handle: a KV cache (decoding continues on
one process), sliding-window or strided attention, core.quant's fused int4 projections.
"""

from __future__ import annotations

import os
import queue
import socket
import traceback
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from core.model import Attention, Transformer, apply_rope, rope_tables

QUERY_TILE = 512  # query positions scored at once: the score buffer holds QUERY_TILE x (a chunk's keys) per head


@dataclass(frozen=True)
class Zigzag:
    """Where each token of an `n_tokens` sequence goes on `world` ranks: the sequence is padded to 2 * world chunks
    of `chunk` tokens and rank r holds chunks r and 2 * world - 1 - r, an early and a late one, so that under a
    causal mask every rank has the same work."""

    n_tokens: int
    world: int

    def __post_init__(self):
        if self.n_tokens < 1 or self.world < 1:
            raise ValueError(f"need at least one token and one rank, got {self.n_tokens} and {self.world}")

    @property
    def chunk(self) -> int:
        return -(-self.n_tokens // (2 * self.world))

    def chunks(self, rank: int) -> tuple[int, int]:
        return rank, 2 * self.world - 1 - rank

    def indices(self, rank: int) -> torch.Tensor:
        """The sequence indices (2 * chunk,) of the tokens rank holds, in order; those >= n_tokens are padding."""
        return torch.cat([torch.arange(i * self.chunk, (i + 1) * self.chunk) for i in self.chunks(rank)])

    def shard(self, x: torch.Tensor, rank: int, dim: int = -1) -> torch.Tensor:
        """rank's part of `x`, which holds the whole sequence along `dim`; padding is zeros."""
        pad = list(x.shape)
        pad[dim] = 2 * self.world * self.chunk - x.shape[dim]
        padded = torch.cat((x, x.new_zeros(pad)), dim=dim)
        return padded.index_select(dim, self.indices(rank).to(x.device))


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: Zigzag, causal: bool = True,
                   group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Attention (B, H, 2C, D), in q's dtype, of this rank's queries q (B, H, 2C, D) over the whole sequence, of
    which the rank holds the keys and values k, v (B, Hkv, 2C, D): the shards `layout.shard` cuts, RoPE already
    applied. Rows of padding mean nothing. Collective: every rank of `group` calls it with its own shards."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    if world != layout.world:
        raise ValueError(f"the layout is for {layout.world} ranks, the process group has {world}")
    (B, H, T, D), dtype = q.shape, q.dtype
    Hkv, C = k.shape[1], layout.chunk
    assert T == 2 * C and k.shape == v.shape == (B, Hkv, T, D) and H % Hkv == 0, (q.shape, k.shape, v.shape, C)
    # (B, Hkv, n_rep, T, D): query head g * n_rep + j is row j of key/value head g; the scale folded in once
    q = q.float().reshape(B, Hkv, H // Hkv, T, D) * D ** -0.5
    kv = torch.stack((k, v))  # (2, B, Hkv, T, D): one message per step, in the dtype it came in
    partial: list[tuple[torch.Tensor, torch.Tensor] | None] = [None, None]  # per query chunk: out, lse (float32)
    for step in range(world):
        source = (rank - step) % world  # whose keys and values `kv` holds at this step
        if step < world - 1:  # pass them on while this step computes
            incoming = torch.empty_like(kv)
            requests = dist.batch_isend_irecv([
                dist.P2POp(dist.isend, kv, group=group, group_peer=(rank + 1) % world),
                dist.P2POp(dist.irecv, incoming, group=group, group_peer=(rank - 1) % world)])
        for i, q_chunk in enumerate(layout.chunks(rank)):
            for j, k_chunk in enumerate(layout.chunks(source)):
                real_keys = min(C, layout.n_tokens - k_chunk * C)
                skip = q_chunk * C >= layout.n_tokens or real_keys <= 0 or (causal and k_chunk > q_chunk)
                if skip:  # all padding, or all masked
                    continue
                keys = slice(j * C, j * C + real_keys)
                block = _attend(q[:, :, :, i * C:(i + 1) * C], kv[0, :, :, keys].float(), kv[1, :, :, keys].float(),
                                diagonal=causal and k_chunk == q_chunk)
                partial[i] = block if partial[i] is None else _merge(partial[i], block)
        if step < world - 1:
            for request in requests:
                request.wait()
            kv = incoming
    out = q.new_zeros(q.shape)
    for i, part in enumerate(partial):
        if part is not None:
            out[:, :, :, i * C:(i + 1) * C] = part[0]
    return out.reshape(B, H, T, D).to(dtype)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, diagonal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of scaled queries q (B, Hkv, n_rep, Tq, D) over k, v (B, Hkv, Tk, D) in float32, with its
    log-sum-exp (B, Hkv, n_rep, Tq) for merging. `diagonal`: queries and keys are the same chunk, so query t sees
    keys 0..t. Queries go QUERY_TILE at a time, each tile against only the keys it can see."""
    B, Hkv, n_rep, Tq, D = q.shape
    out, lse = q.new_empty(q.shape), q.new_empty(q.shape[:-1])
    for start in range(0, Tq, QUERY_TILE):
        stop = min(start + QUERY_TILE, Tq)
        n_keys = min(stop, k.shape[2]) if diagonal else k.shape[2]
        rows = q[:, :, :, start:stop].reshape(B, Hkv, n_rep * (stop - start), D)
        scores = (rows @ k[:, :, :n_keys].transpose(-1, -2)).view(B, Hkv, n_rep, stop - start, n_keys)
        if diagonal:
            ahead = torch.arange(start, stop, device=q.device)[:, None] < torch.arange(n_keys, device=q.device)
            scores.masked_fill_(ahead, -torch.inf)
        top = scores.amax(-1, keepdim=True)  # finite: every query sees at least one key
        probs = scores.sub_(top).exp_()  # in place: one pass of exp over the tile, normalised after the product
        total = probs.sum(-1, keepdim=True)
        tile = (probs.view(B, Hkv, n_rep * (stop - start), n_keys) @ v[:, :, :n_keys]).view(B, Hkv, n_rep, -1, D)
        out[:, :, :, start:stop] = tile / total
        lse[..., start:stop] = (top + total.log()).squeeze(-1)
    return out, lse


def _merge(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]):
    """The online-softmax update: two partial results over disjoint key sets -> the result over their union."""
    (out_a, lse_a), (out_b, lse_b) = a, b
    lse = torch.logaddexp(lse_a, lse_b)
    out = out_a.mul_((lse_a - lse).exp_()[..., None]).add_(out_b * (lse_b - lse).exp_()[..., None])
    return out, lse


@torch.inference_mode()
def ring_prefill(model: Transformer, tokens: torch.Tensor, positions: torch.Tensor, logits_to_keep: int | None = None,
                 group: dist.ProcessGroup | None = None) -> torch.Tensor | None:
    """On rank 0, what `model(tokens, positions, logits_to_keep=logits_to_keep)` returns (float32 logits), computed
    with each rank running every layer on its zigzag shard and ring attention between shards; None on other ranks.

    Every rank passes the whole tokens (B, T) and positions (T,) (a few integers per token) and cuts its shard
    itself. The tokens are in sequence order, a prefill: positions only place them for RoPE, which each shard
    applies with its own tokens' positions before attention, and for learned position embeddings."""
    c = model.config
    if c.attention != "causal":
        raise ValueError(f"ring attention computes causal attention, not {c.attention!r}")
    if any(block.attn.wk is None for block in model.layers):
        raise ValueError("ring_prefill needs separate q/k/v projections: load the model with dtype float32, "
                         "bfloat16 or float16, not int4")
    if tokens.dim() != 2 or positions.shape != tokens.shape[1:]:
        raise ValueError(f"tokens (B, T) and positions (T,) expected, got {tuple(tokens.shape)} and "
                         f"{tuple(positions.shape)}")
    if int(positions.min()) < 0 or int(positions.max()) >= c.max_seq_len:
        raise ValueError(f"positions must lie in [0, {c.max_seq_len})")
    layout = Zigzag(tokens.shape[1], dist.get_world_size(group))
    rank, device = dist.get_rank(group), model.norm.weight.device
    positions = layout.shard(positions, rank).to(device)  # (2C,)
    x = model.tok_embeddings(layout.shard(tokens, rank).to(device)).to(model.dtype)  # (B, 2C, dim)
    if model.pos_embeddings is not None:
        x = x + model.pos_embeddings(positions)
    rope = tuple(t.to(x.dtype) for t in rope_tables(c, positions[None])) if c.position == "rope" else None
    for block in model.layers:
        x = x + _attention(block.attn, block.attn_norm(x), rope, layout, group)
        x = x + block.ffn(block.ffn_norm(x))
    return _gather_logits(model, x, layout, logits_to_keep, group)


def _attention(attn: Attention, x: torch.Tensor, rope, layout: Zigzag, group) -> torch.Tensor:
    """The layer's attention with its own projections and RoPE, ring attention in place of its SDPA call."""
    c = attn.config
    B, T, _ = x.shape
    q = attn.wq(x).view(B, T, c.n_heads, c.head_dim).transpose(1, 2)  # (B, H, T, D)
    k = attn.wk(x).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
    v = attn.wv(x).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
    if rope is not None:
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    y = ring_attention(q, k, v, layout, causal=True, group=group)  # (B, H, T, D)
    return attn.wo(y.transpose(1, 2).reshape(B, T, c.dim))


def _gather_logits(model: Transformer, x: torch.Tensor, layout: Zigzag, keep: int | None, group) -> torch.Tensor | None:
    """Rank 0 gets the logits of the last `keep` tokens (all when None) in sequence order. Each rank projects only
    its own rows among them, sent in a block of the largest rank's size (dist.gather takes equal sizes)."""
    rank, world = dist.get_rank(group), layout.world
    first = layout.n_tokens - min(keep or layout.n_tokens, layout.n_tokens)
    held = [layout.indices(r) for r in range(world)]
    wanted = [(index >= first) & (index < layout.n_tokens) for index in held]  # (2C,) bool per rank
    rows = model.output(model.norm(x[:, wanted[rank].to(x.device)])).float()  # (B, n, vocab)
    block = rows.new_zeros(rows.shape[0], max(int(w.sum()) for w in wanted), rows.shape[2])
    block[:, :rows.shape[1]] = rows
    parts = [torch.empty_like(block) for _ in range(world)] if rank == 0 else None
    dist.gather(block, parts, group=group, group_dst=0)
    if rank != 0:
        return None
    logits = torch.cat([part[:, :int(w.sum())] for part, w in zip(parts, wanted, strict=True)], dim=1)
    order = torch.cat([index[w] for index, w in zip(held, wanted, strict=True)]).argsort()
    return logits[:, order.to(logits.device)]


class RanksFailed(RuntimeError):
    """One or more ranks of `run_ranks` raised or died; `errors` maps each such rank to its traceback."""

    def __init__(self, errors: dict[int, str]):
        super().__init__("ranks " + ", ".join(map(str, sorted(errors))) + " failed:\n"
                         + "\n".join(f"--- rank {rank} ---\n{text}" for rank, text in sorted(errors.items())))
        self.errors = errors


def run_ranks(fn, world: int, *args, timeout_s: float = 60.0, backend: str | None = None) -> list:
    """fn(*args)'s results, by rank, from `world` new processes joined in a process group (spawned, so fn must be
    importable). Each has its share of the CPU threads (one GPU each under NCCL, the default where CUDA is);
    every collective times out after `timeout_s`, so when a rank fails the others raise instead of waiting for
    it forever. Raises RanksFailed with each failed rank's traceback. `torchrun --nproc-per-node P script.py`
    does the same from outside: the script calls dist.init_process_group(timeout=...) and then fn."""
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    context = mp.get_context("spawn")
    results, collected = context.Queue(), context.Event()
    address = f"tcp://127.0.0.1:{_free_port()}"
    processes = [context.Process(target=_rank_main, daemon=True,
                                 args=(rank, world, address, backend, timeout_s, fn, args, results, collected))
                 for rank in range(world)]
    for process in processes:
        process.start()
    outcomes: dict[int, tuple[bool, object]] = {}
    try:
        while len(outcomes) < world:
            try:
                rank, ok, value = results.get(timeout=1.0)
                outcomes[rank] = ok, value
            except queue.Empty:  # a rank killed (out of memory, a signal) never answers: say so instead of waiting
                for rank, process in enumerate(processes):
                    if process.exitcode is not None and rank not in outcomes:
                        outcomes[rank] = False, f"exited with code {process.exitcode} without a result"
    finally:  # every result is in (or this process is interrupted): the ranks may go
        collected.set()
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    errors = {rank: value for rank, (ok, value) in outcomes.items() if not ok}
    if errors:
        raise RanksFailed(errors)
    return [outcomes[rank][1] for rank in range(world)]


def _rank_main(rank, world, address, backend, timeout_s, fn, args, results, collected) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if backend == "nccl":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    try:
        dist.init_process_group(backend, init_method=address, rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s))
        try:
            value = fn(*args)
        finally:
            dist.destroy_process_group()
        results.put((rank, True, value))
    except Exception:
        results.put((rank, False, traceback.format_exc()))
    collected.wait(timeout_s)  # tensors in a result live in this process's shared memory until the parent has them


def _free_port() -> int:
    """A loopback port free now, for the rendezvous: parallel runs each get their own."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
