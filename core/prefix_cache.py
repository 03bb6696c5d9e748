"""PrefixCache: keys and values of recent prompts, reused when a new prompt starts the same way.

Causal attention makes the KV of the first m tokens depend on those m tokens only, so any stored
prompt that shares m leading tokens with a new one saves m tokens of prefill: a system prompt, a
RAG context, an agent's tool list. Entries are whole prompts, evicted least-recently-used to stay
within a byte budget. An entry also keeps its prompt's last logits: the same prompt again then needs no
prefill at all, and starts from exactly the logits the first run had (in int4 or bfloat16 a prefill split
differently rounds differently, which could change a seeded sample).

A lookup runs under the engine's lock, so it costs O(prompt length), not O(entries): every entry is
indexed under the hash of each of its leading whole blocks of BLOCK tokens, a lookup walks the new
prompt's blocks down that index, and the match is then measured token by token against the newest
entry found there (so a hash collision costs reuse, never correctness). Does not find a match shorter
than one block; where several entries share the prompt's leading blocks, it may miss a longer match
with another of them, by less than a block.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch

BLOCK = 16  # tokens per indexed block


def block_hashes(ids: Sequence[int]) -> Iterator[int]:
    """One hash per whole leading block: the i-th stands for ids[: (i + 1) * BLOCK]."""
    chained = 0
    for start in range(0, len(ids) - BLOCK + 1, BLOCK):
        chained = hash((chained, *ids[start: start + BLOCK]))
        yield chained


def shared_length(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """How many leading tokens a and b share."""
    n = min(len(a), len(b))
    start = 0
    while start + BLOCK <= n and a[start: start + BLOCK] == b[start: start + BLOCK]:  # a block at a time, in C
        start += BLOCK
    end = min(start + BLOCK, n)
    return next((i for i in range(start, end) if a[i] != b[i]), end)


class PrefixCache:
    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._entries: OrderedDict[tuple[int, ...], tuple[torch.Tensor, ...]] = OrderedDict()  # k, v[, logits]
        self._index: dict[int, dict[tuple[int, ...], None]] = {}  # block hash -> entries under it, oldest first
        self.hits = self.tokens_reused = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, prompt_ids: list[int]) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
        """(m, k, v): the longest stored match, with m < len(prompt_ids) so at least one token is left to prefill.

        k, v are (L, Hkv, n, D) with n >= m; only their first m slots apply.
        """
        prompt = tuple(prompt_ids[:-1])
        candidate = None
        for chained in block_hashes(prompt):
            holders = self._index.get(chained)
            if holders is None:
                break
            candidate = next(reversed(holders))  # the newest entry sharing the most blocks
        shared = shared_length(candidate, prompt) if candidate is not None else 0
        if not shared:
            return 0, None, None
        self._entries.move_to_end(candidate)
        self.hits += 1
        self.tokens_reused += shared
        k, v = self._entries[candidate][:2]
        return shared, k, v

    def whole(self, prompt_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(k, v, last logits) when exactly this prompt was stored with its logits, else None."""
        entry = self._entries.get(tuple(prompt_ids))
        if entry is None or len(entry) < 3:
            return None
        self._entries.move_to_end(tuple(prompt_ids))
        self.hits += 1
        self.tokens_reused += len(prompt_ids)
        return entry

    def insert(self, prompt_ids: list[int], k: torch.Tensor, v: torch.Tensor, logits: torch.Tensor | None = None):
        """Store copies of k, v (L, Hkv, len(prompt_ids), D) for this prompt, and of its last logits if given."""
        key = tuple(prompt_ids)
        entry = (k, v) if logits is None else (k, v, logits)
        size = _bytes(entry)
        if size > self.budget_bytes or key in self._entries or len(key) < BLOCK:
            return
        while self.used_bytes + size > self.budget_bytes:
            self._evict_oldest()
        self._entries[key] = tuple(t.clone() for t in entry)
        self.used_bytes += size
        for chained in block_hashes(prompt_ids):
            self._index.setdefault(chained, {})[key] = None

    def _evict_oldest(self) -> None:
        key, entry = self._entries.popitem(last=False)
        self.used_bytes -= _bytes(entry)
        for chained in block_hashes(key):
            holders = self._index[chained]
            del holders[key]
            if not holders:
                del self._index[chained]


def _bytes(tensors: tuple[torch.Tensor, ...]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)
