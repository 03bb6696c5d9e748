"""The prefix cache's indexed lookup against a brute-force scan of every stored prompt.

The index finds matches a block at a time, then measures the match token by token: it may miss at most the
part of a block that a second entry shares beyond the one it picked, never more, and never reports a match
that is not there.
"""

import random

import torch

from core.prefix_cache import BLOCK, PrefixCache


def stored(ids):
    """k = v = the token ids themselves, (L=1, Hkv=1, n, D=1), so a returned slot shows which token it holds."""
    kv = torch.tensor(ids, dtype=torch.float32)[None, None, :, None]
    return kv, kv


def brute_force(prompts, prompt):
    best = 0
    for key in prompts:
        shared = 0
        for a, b in zip(key, prompt[:-1], strict=False):
            if a != b:
                break
            shared += 1
        best = max(best, shared)
    return best


def test_lookup_finds_the_longest_match_within_a_block():
    rng = random.Random(0)
    trunk = [rng.randrange(5) for _ in range(100)]
    cache = PrefixCache(budget_bytes=10**9)
    prompts = []
    for _ in range(60):  # prompts branching off a shared trunk at every length, over a small alphabet
        prompt = trunk[: rng.randrange(0, 100)] + [rng.randrange(5) for _ in range(rng.randrange(1, 40))]
        cache.insert(prompt, *stored(prompt))
        prompts.append(prompt)
    for _ in range(300):
        prompt = trunk[: rng.randrange(0, 100)] + [rng.randrange(5) for _ in range(rng.randrange(1, 40))]
        best = brute_force([p for p in prompts if len(p) >= BLOCK], prompt)
        m, k, v = cache.lookup(prompt)
        assert max(0, best - BLOCK + 1) <= m <= best < len(prompt), (best, m)
        if m:
            assert k[0, 0, :m, 0].tolist() == prompt[:m] and torch.equal(k, v)


def test_a_shared_system_prompt_is_found_whole():
    """The common case: prompts that share a system prompt, then differ; each lookup gets every shared token."""
    rng = random.Random(1)
    system = [rng.randrange(100) for _ in range(37)]
    cache = PrefixCache(budget_bytes=10**9)
    prompts = []
    for i in range(20):
        prompt = system + [100 + i] * rng.randrange(1, 30) + [rng.randrange(100) for _ in range(rng.randrange(1, 30))]
        assert cache.lookup(prompt)[0] == brute_force(prompts, prompt)
        cache.insert(prompt, *stored(prompt))
        prompts.append(prompt)
        again = prompt[:-3] + [200, 200, 200]  # the same conversation, a different last turn
        assert cache.lookup(again)[0] == brute_force(prompts, again) == len(prompt) - 3


def test_evicted_prompts_are_no_longer_found():
    prompts = [[i] * 40 for i in range(10)]
    size = 2 * 40 * 4
    cache = PrefixCache(budget_bytes=3 * size)
    for prompt in prompts:
        cache.insert(prompt, *stored(prompt))
    assert len(cache) == 3 and cache.used_bytes == 3 * size
    assert [cache.lookup(p + [99])[0] for p in prompts] == [0] * 7 + [40] * 3


def test_a_prompt_shorter_than_a_block_is_not_stored():
    cache = PrefixCache(budget_bytes=10**9)
    cache.insert(list(range(BLOCK - 1)), *stored(list(range(BLOCK - 1))))
    assert len(cache) == 0
