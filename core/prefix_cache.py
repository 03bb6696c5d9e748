"""PrefixCache: keys and values of recent prompts, reused when a new prompt starts the same way.

Causal attention makes the KV of the first m tokens depend on those m tokens only, so any stored
prompt that shares m leading tokens with a new one saves m tokens of prefill: a system prompt, a
RAG context, an agent's tool list. Entries are whole prompts, evicted least-recently-used to stay
within a byte budget.
"""

from __future__ import annotations

from collections import OrderedDict

import torch


class PrefixCache:
    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._entries: OrderedDict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.hits = self.tokens_reused = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, prompt_ids: list[int]) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
        """(m, k, v): the longest stored match, with m < len(prompt_ids) so at least one token is left to prefill.

        k, v are (L, Hkv, n, D) with n >= m; only their first m slots apply.
        """
        prompt = torch.tensor(prompt_ids)
        best, best_key = 0, None
        for key in self._entries:
            stored = torch.tensor(key[: len(prompt_ids) - 1])
            differs = (stored != prompt[: len(stored)]).nonzero()
            shared = int(differs[0]) if len(differs) else len(stored)
            if shared > best:
                best, best_key = shared, key
        if best_key is None:
            return 0, None, None
        self._entries.move_to_end(best_key)
        self.hits += 1
        self.tokens_reused += best
        return best, *self._entries[best_key]

    def insert(self, prompt_ids: list[int], k: torch.Tensor, v: torch.Tensor) -> None:
        """Store copies of k, v (L, Hkv, len(prompt_ids), D) for this prompt."""
        key = tuple(prompt_ids)
        size = 2 * k.numel() * k.element_size()
        if size > self.budget_bytes or key in self._entries:
            return
        while self.used_bytes + size > self.budget_bytes:
            _, (old_k, _) = self._entries.popitem(last=False)
            self.used_bytes -= 2 * old_k.numel() * old_k.element_size()
        self._entries[key] = (k.clone(), v.clone())
        self.used_bytes += size
