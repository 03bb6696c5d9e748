"""Engine: continuous batching over one model, with a KV cache of rows and a prefix cache.

Requests join and leave between decode steps. A step admits waiting requests into free cache rows
(reusing a cached prefix when one matches), prefills at most `prefill_chunk` prompt tokens of them
while other sequences decode (SOLO_PREFILL when none does), then decodes one token for every row whose
prompt is in, all at once: beside running sequences a long prompt takes several steps, and they keep
getting a token at each.

One request cannot end the others: an error in a sequence's sampling, constraint or logits processor
ends that sequence alone (its reader gets the exception); only a failed forward pass ends every
sequence in it.

Steps are run by the readers themselves: a reader whose stream has nothing to read runs the next
step for everyone (one at a time, under a lock), so there is no engine thread to start, stop or
outlive the interpreter, and a script's generation runs on its own thread (where, on CPU, torch's
float16 kernels are twice as fast as on a new one). `LLM` sends every call through here, so a
single generation and a server under load take the same path.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import queue
import threading
from collections import deque
from dataclasses import dataclass, field

import torch

from core.errors import ContextLengthError, ModelRequestError
from core.kv_cache import KVCache, kv_cache_bytes
from core.model import Transformer
from core.prefix_cache import PrefixCache
from core.sampling import SamplingParams, next_token
from core.text_stream import TextStream
from core.tokenizer import Tokenizer

GiB = 2**30
SOLO_PREFILL = 1024  # prompt tokens prefilled per step when no sequence decodes (bounds a chunk's attention mask)
SLOT_BLOCK = 256  # the KV cache grows by whole blocks of this many positions per row (Engine._slots)
MMAP_THRESHOLD = 4 * 2**20  # bytes: glibc gives blocks from this size their own mapping (see release_large_blocks)


def release_large_blocks() -> None:
    """Have glibc's malloc map blocks of MMAP_THRESHOLD bytes and more on their own, so that freeing one (a KV
    cache outgrown or gone idle, a prefix-cache entry evicted) returns its memory to the system at once.

    By default glibc raises its mapping threshold to the size of each mapped block freed, up to 32 MiB, so
    after the first KV cache is freed the next ones come from the heap, where freed memory stays in the process
    (SmolLM2's bench run: 70-110 MB of free heap at its peaks). Activations and logits stay under the threshold,
    so decode steps map nothing. Process-wide and idempotent; skipped off glibc, or where the user set
    MALLOC_MMAP_THRESHOLD_ themselves.
    """
    if not _glibc() or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_THRESHOLD)  # -3: M_MMAP_THRESHOLD


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # not a POSIX system, or it does not know the name
        return False


@dataclass
class EngineConfig:
    max_batch: int = 8  # sequences decoded together
    max_seq_len: int = 4096  # prompt + output per sequence (capped by the model's context)
    kv_cache_bytes: int = 3 * GiB  # checked up front for max_batch full-length sequences
    prefix_cache_bytes: int = GiB // 2
    prefill_chunk: int = 256  # prompt tokens prefilled per step while sequences decode (else SOLO_PREFILL)

    def __post_init__(self):
        if self.max_batch < 1 or self.max_seq_len < 2 or self.prefill_chunk < 1:
            raise ValueError(f"max_batch and prefill_chunk must be >= 1 and max_seq_len >= 2, got {self.max_batch}, "
                             f"{self.prefill_chunk}, {self.max_seq_len}")


_END = object()


@dataclass(eq=False)
class GenerationStream:
    """One request: iterate for text deltas; afterwards `finish_reason` and token counts.

    finish_reason: "stop" (end of turn, a stop string, a complete constrained output), "length"
    (max_new_tokens or the context's end), "cancelled" (`cancel()` or a reader that stopped reading),
    "error" (the exception is raised to the reader).

    A constrained output under max_new_tokens always matches: when the budget left only just holds the
    shortest way to finish, it is finished ("stop", and `closed_early` is True: the constraint replaced a
    token the sampler chose); "length" for a constrained output means it was complete but could have gone
    on (a regex like `[0-9]+`). Without max_new_tokens only the context's end bounds it, and it is not guarded.
    """

    engine: Engine = field(repr=False)
    prompt_ids: list[int]
    params: SamplingParams
    constraint: object | None  # a core.constrain.ConstraintState
    text: TextStream
    generator: torch.Generator | None
    queue: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    generated: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    cancelled: bool = False
    position: int = 0  # where the next fed token sits: during the prefill, the next prompt token
    last_token: int = 0
    closed_early: bool = False  # the budget made the constraint refuse a sampled token at least once

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def prefilling(self) -> bool:
        return self.position < len(self.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return len(self.generated)

    def __iter__(self):
        try:
            while True:
                while self.queue.empty():
                    self.engine.step(self)
                if (item := self.queue.get()) is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if self.finish_reason is None:  # the reader stopped reading: nobody wants the rest
                self.cancel()

    def cancel(self) -> None:
        """Stop this request from any thread, whether or not it started; its reader returns.

        Never waits for a running step: that step, or the next, frees the request's row.
        """
        self.cancelled = True
        self.queue.put(_END)
        self.engine.drop_cancelled()


class Engine:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, config: EngineConfig | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.config = config or EngineConfig()
        self.max_seq_len = min(self.config.max_seq_len, model.config.max_seq_len)
        self.dtype = model.dtype
        needed = kv_cache_bytes(model.config, self.config.max_batch, self.max_seq_len, self.dtype)
        if needed > self.config.kv_cache_bytes:
            raise ValueError(
                f"a KV cache for {self.config.max_batch} sequences of {self.max_seq_len} tokens needs "
                f"{needed / GiB:.2f} GiB, over the {self.config.kv_cache_bytes / GiB:.2f} GiB budget: "
                "lower max_batch or max_seq_len, or raise kv_cache_bytes")
        self.prefix_cache = PrefixCache(self.config.prefix_cache_bytes)
        self.cache: KVCache | None = None  # grown on demand (rows up to max_batch, slots up to max_seq_len), freed idle
        self.rows: list[GenerationStream | None] = []
        self.stop_ids = frozenset(tokenizer.stop_ids)
        self._waiting: deque[GenerationStream] = deque()
        self._prefilling: deque[GenerationStream] = deque()  # holding a row, prompt not all in; oldest first
        self._lock = threading.Lock()  # one step at a time
        release_large_blocks()

    def submit(self, prompt_ids: list[int], params: SamplingParams, constraint=None) -> GenerationStream:
        """Queue a request; its stream starts yielding as soon as a row is free. Bad input raises here:
        ContextLengthError when prompt plus max_new_tokens exceed max_seq_len (None: as many as fit)."""
        if not prompt_ids:
            raise ModelRequestError("the prompt is empty: give at least one token")
        if len(prompt_ids) >= self.max_seq_len:
            raise ContextLengthError(f"the prompt has {len(prompt_ids)} tokens; the context holds {self.max_seq_len} "
                                     "(prompt and output together): shorten the prompt")
        if params.max_new_tokens is not None and len(prompt_ids) + params.max_new_tokens > self.max_seq_len:
            raise ContextLengthError(
                f"the prompt has {len(prompt_ids)} tokens and max_new_tokens is {params.max_new_tokens}; the context "
                f"holds {self.max_seq_len} (prompt and output together): shorten the prompt or lower max_new_tokens")
        vocab_size = self.model.config.vocab_size
        if any(token_id >= vocab_size for token_id in params.logit_bias):
            raise ModelRequestError(f"logit_bias names token ids past the vocabulary of {vocab_size}: "
                                    f"{sorted(t for t in params.logit_bias if t >= vocab_size)[:5]}")
        if constraint is not None and params.max_new_tokens is not None:
            try:
                constraint.limit(params.max_new_tokens)
            except ValueError as error:  # not even the shortest output that matches fits
                raise ModelRequestError(str(error)) from None
        generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
        stream = GenerationStream(self, prompt_ids, params, constraint, TextStream(self.tokenizer, params.stop),
                                  generator)
        with self._lock:
            if params.max_new_tokens == 0:
                self._finish(stream, "length")
            else:
                self._waiting.append(stream)
        return stream

    def step(self, reader: GenerationStream) -> None:
        """Admit what fits, prefill a chunk of prompts, decode one token for every prefilled row: unless, by
        the time this reader gets the lock, another reader's step has already given it something to read."""
        with torch.inference_mode(), self._lock:
            if not reader.queue.empty():
                return
            self._sweep()
            self._admit()
            self._prefill_chunk()
            decoding = [s for s in self.rows if s is not None and not s.prefilling]
            if decoding:
                self._guarded(decoding, self._decode_step, decoding)
            self._sweep()
            if not self._waiting and not any(self.rows):  # idle: give the KV cache back; the next request regrows it
                self.cache, self.rows = None, []

    def drop_cancelled(self) -> None:
        """Free the rows and queue places of cancelled requests now, unless a step is running (it will)."""
        if self._lock.acquire(blocking=False):
            try:
                self._sweep()
            finally:
                self._lock.release()

    def _sweep(self) -> None:
        for stream in [*self._waiting, *self.rows]:
            if stream is not None and stream.cancelled and stream.finish_reason is None:
                self._finish(stream, "cancelled")

    def _guarded(self, streams, step, *args) -> None:
        """Run a step; an error in it ends the streams it touched (raised in their readers), not the engine."""
        try:
            step(*args)
        except Exception as error:  # handed to the reader, who sees the original exception
            for stream in streams:
                if stream.finish_reason is None:
                    stream.queue.put(error)
                    self._finish(stream, "error")

    def _admit(self) -> None:
        """Give waiting requests the free rows, each with the longest cached prefix of its prompt."""
        while self._waiting:
            row = self._free_row()
            if row is None:
                break
            stream = self._waiting.popleft()
            self.rows[row] = stream
            self._prefilling.append(stream)
            self._guarded([stream], self._reuse_prefix, stream, row)

    def _free_row(self) -> int | None:
        """A free row with slots for the first waiting prompt. A grown cache has rows for the requests waiting
        with it and slots for the longest of their prompts: a burst of requests costs one allocation."""
        row = next((row for row, occupant in enumerate(self.rows) if occupant is None), None)
        if row is not None:
            self._reserve(self._waiting[0].prompt_tokens + 1)
            return row
        if len(self.rows) == self.config.max_batch:
            return None
        capacity = min(self.config.max_batch, max(len(self.rows) + len(self._waiting), 2 * len(self.rows)))
        joining = itertools.islice(self._waiting, capacity - len(self.rows))
        length = max(self.cache.max_len if self.cache is not None else 0, *(s.prompt_tokens + 1 for s in joining))
        self._grow(capacity, self._slots(length))
        self.rows += [None] * (capacity - len(self.rows))
        return self.rows.index(None)

    def _reserve(self, length: int) -> None:
        """Slots for `length` positions in every row: a prompt's whole length when it is admitted, then more as
        sequences grow, so the cache's memory follows the longest sequence so far, not the context length."""
        if length > self.cache.max_len:
            self._grow(len(self.rows), self._slots(length))

    def _slots(self, length: int) -> int:
        """Slots to allocate for `length` positions: whole blocks of SLOT_BLOCK, up to max_seq_len. Not a doubling:
        growing copies the cache, and a doubled cache may hold twice what is used (a 1,025-token prompt would
        take 2,048 slots); a copy every SLOT_BLOCK decode steps costs under 1% of their time."""
        return min(self.max_seq_len, -(-length // SLOT_BLOCK) * SLOT_BLOCK)

    def _grow(self, rows: int, length: int) -> None:
        grown = KVCache.allocate(self.model.config, rows, length, self.dtype)
        if self.cache is not None:
            old_rows, old_length = self.cache.k.shape[1], self.cache.max_len
            grown.k[:, :old_rows, :, :old_length] = self.cache.k
            grown.v[:, :old_rows, :, :old_length] = self.cache.v
        self.cache = grown

    def _reuse_prefix(self, stream: GenerationStream, row: int) -> None:
        whole = self.prefix_cache.whole(stream.prompt_ids)
        if whole is not None:  # this very prompt ran before: decoding starts from that run's logits, no prefill
            k, v, logits = whole
            reused = stream.prompt_tokens
        else:
            reused, k, v = self.prefix_cache.lookup(stream.prompt_ids)
        if reused:
            self._reserve(reused)
            self.cache.k[:, row, :, :reused] = k[:, :, :reused]
            self.cache.v[:, row, :, :reused] = v[:, :, :reused]
            stream.position = reused
        if whole is not None:
            self._prefilling.remove(stream)
            self._advance(stream, logits.clone())

    def _prefill_chunk(self) -> None:
        """Feed at most `prefill_chunk` prompt tokens in all, to the earliest admitted prompts first; SOLO_PREFILL
        when no sequence is decoding, as nobody waits between chunks then. Larger chunks prefill faster: int4
        layers unpack their weights once for all of a chunk's rows (core.quant.Int4Linear), and attention runs
        as one causal kernel call instead of two merged ones (core.attention.causal_after_prefix)."""
        decoding = any(s is not None and not s.prefilling for s in self.rows)
        budget = self.config.prefill_chunk if decoding else max(self.config.prefill_chunk, SOLO_PREFILL)
        for stream in list(self._prefilling):
            if budget == 0:
                break
            n = min(budget, stream.prompt_tokens - stream.position)
            self._guarded([stream], self._prefill, stream, n)
            budget -= n

    def _prefill(self, stream: GenerationStream, n: int) -> None:
        """Feed the next n prompt tokens; after the last, store the prompt's KV and sample the first token."""
        ids, start, row = stream.prompt_ids, stream.position, self.rows.index(stream)
        self._reserve(start + n)
        cache = self.cache.rows(row, row + 1)
        tokens = torch.tensor([ids[start: start + n]])
        logits = self.model(tokens, torch.arange(start, start + n)[None], kv_cache=cache, logits_to_keep=1)[0, -1]
        stream.position = start + n
        if stream.prefilling:
            return
        self._prefilling.remove(stream)
        self.prefix_cache.insert(ids, cache.k[:, 0, :, : len(ids)], cache.v[:, 0, :, : len(ids)], logits)
        self._advance(stream, logits)

    def _decode_step(self, decoding: list[GenerationStream]) -> None:
        """One token for each of `decoding`; an error in one sequence's sampling ends that sequence alone."""
        rows = [self.rows.index(stream) for stream in decoding]
        n = max(rows) + 1
        # Rows not decoding feed a dummy token into a slot their next write overwrites: a free row's slot 0,
        # a prefilling row's next prompt slot.
        tokens = torch.zeros((n, 1), dtype=torch.long)
        tokens[rows, 0] = torch.tensor([stream.last_token for stream in decoding])
        positions = torch.tensor([[s.position if s is not None else 0] for s in self.rows[:n]])  # (n, 1)
        self._reserve(int(positions.max()) + 1)
        logits = self.model(tokens, positions, kv_cache=self.cache.rows(0, n))[:, -1]  # (n, vocab)
        for stream, row in zip(decoding, rows, strict=True):
            stream.position += 1
            self._guarded([stream], self._advance, stream, logits[row])

    def _advance(self, stream: GenerationStream, logits: torch.Tensor) -> None:
        """Sample the next token of one sequence, emit its text, and end the sequence when it is done."""
        if stream.cancelled:
            return self._finish(stream, "cancelled")
        constraint = stream.constraint
        allowed = constraint.allowed(logits.shape[-1]) if constraint is not None else None
        token = next_token(logits, stream.params, stream.prompt_ids, stream.generated, allowed, stream.generator)
        if constraint is not None and token not in self.stop_ids and not constraint.advance(token):
            # No room left to finish after that token: sample again among those that leave room.
            stream.closed_early = True
            allowed = constraint.within_budget(logits, allowed)
            token = next_token(logits, stream.params, stream.prompt_ids, stream.generated, allowed, stream.generator)
            if token not in self.stop_ids and not constraint.advance(token):
                raise RuntimeError(f"token {token} was checked to fit the budget but does not")
        if token in self.stop_ids:
            return self._finish(stream, "stop")
        stream.generated.append(token)
        delta = stream.text.push(token)
        if delta:
            stream.queue.put(delta)
        if stream.text.stopped or (stream.constraint is not None and stream.constraint.done):
            return self._finish(stream, "stop")
        limit = stream.params.max_new_tokens
        if (limit is not None and len(stream.generated) >= limit) or stream.position + 1 >= self.max_seq_len:
            return self._finish(stream, "length")
        stream.last_token = token

    def _finish(self, stream: GenerationStream, reason: str) -> None:
        if reason != "error":
            tail = stream.text.finish() if not stream.text.stopped else ""
            if tail:
                stream.queue.put(tail)
        stream.finish_reason = reason
        stream.queue.put(_END)
        if stream in self.rows:
            self.rows[self.rows.index(stream)] = None
        elif stream in self._waiting:
            self._waiting.remove(stream)
        if stream in self._prefilling:
            self._prefilling.remove(stream)
