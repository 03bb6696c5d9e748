"""Token generation with a KV cache: prefill the prompt, then decode one token at a time.

`generate_tokens` yields token ids and knows nothing about text; `stream_text` turns them into text
deltas that never end inside a UTF-8 character. One sequence at a time: batching, stop strings and
the prefix cache belong to the engine issue.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from core.kv_cache import KVCache
from core.model import Transformer
from core.sampling import sample
from core.tokenizer import Tokenizer


@torch.inference_mode()
def generate_tokens(
    model: Transformer,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    stop_ids: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    """New token ids after `prompt_ids`, stopping after `max_new_tokens` or at a stop id (not yielded)."""
    if not prompt_ids:
        raise ValueError("the prompt is empty: give at least one token")
    limit = model.config.max_seq_len
    if len(prompt_ids) >= limit:
        raise ValueError(f"the prompt has {len(prompt_ids)} tokens; this model's context holds {limit}")
    max_new_tokens = min(max_new_tokens, limit - len(prompt_ids))
    if max_new_tokens <= 0:
        return
    cache = KVCache(model.config, batch_size=1, max_len=len(prompt_ids) + max_new_tokens,
                    dtype=model.tok_embeddings.weight.dtype)
    tokens = torch.tensor([prompt_ids])  # (1, T)
    positions = torch.arange(len(prompt_ids))[None]  # (1, T)
    for _ in range(max_new_tokens):
        logits = model(tokens, positions, kv_cache=cache)[:, -1]  # (1, vocab)
        next_id = int(sample(logits, temperature, generator))
        if next_id in stop_ids:
            return
        yield next_id
        tokens = torch.tensor([[next_id]])
        positions = positions[:, -1:] + 1


def stream_text(tokenizer: Tokenizer, token_ids: Iterator[int]) -> Iterator[str]:
    """Text deltas for a stream of token ids, holding back a trailing partial UTF-8 character."""
    generated: list[int] = []
    emitted = ""
    for token_id in token_ids:
        generated.append(token_id)
        text = tokenizer.decode(generated)
        if text.endswith("\ufffd"):  # the last token ends part-way through a multi-byte character
            continue
        if len(text) > len(emitted):
            yield text[len(emitted):]
            emitted = text
    text = tokenizer.decode(generated)
    if len(text) > len(emitted):
        yield text[len(emitted):]
