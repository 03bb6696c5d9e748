"""The attention explorer's handlers on a local model: a text's tokens, its attention maps per layer and head, the
keys a token attends most, and the next-token distribution through the sampling filters.

`Explorer` holds the model and tokenizer every browser session shares; its methods take plain values and return
plain data (tables as lists of rows, HTML strings), so tests call them without a server, and
`apps.explorer.ui.build_demo` only wires them to Gradio components. One forward pass per text gives both the
attention maps and the next-token logits (`Run`); the last few runs are kept, so moving the layer slider or the
head dropdown does not run the model again.

Text from the page is untrusted: it is cut off at MAX_TEXT_CHARS before tokenizing, special-token text in it stays
plain text (`<|im_start|>` typed is those characters, not a control token), and a text over MAX_TOKENS tokens is
refused before the model runs (the maps cost layers x heads x tokens^2 floats). Bad input raises ExplorerError,
whose message is the page's.
"""

from __future__ import annotations

import html
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from apps.explorer.distribution import Filtered, filter_steps
from core.errors import ModelRequestError
from core.model import Transformer
from core.sampling import SamplingParams
from core.tokenizer import Tokenizer

MAX_TEXT_CHARS = 4000  # of a typed text, before tokenizing
MAX_TOKENS = 512  # of a text whose maps are computed: 30 layers x 9 heads x 512^2 floats is 280 MB for SmolLM2
CACHED_RUNS = 2  # texts whose maps are kept (the page's current one, and the one before)
STRONGEST = 5  # keys listed for a chosen query token
DISTRIBUTION_ROWS = 20  # most likely next tokens listed
MEAN_OF_HEADS = "mean of heads"
EXAMPLES = ("The animal didn't cross the street because it was too tired.",
            "The cat sat on the mat because it was warm.")
DEFAULT_LAYER, DEFAULT_HEAD = 13, 8  # where the page opens: in SmolLM2-135M, "it" attends "animal" there (0.75)
TOKEN_COLOURS = ("#fde68a", "#bfdbfe", "#bbf7d0", "#fecaca", "#ddd6fe", "#fed7aa", "#a5f3fc", "#f5d0fe")


class ExplorerError(ValueError):
    """Input the explorer refuses (empty, too long, no chat template, a bad sampling value); the message says what
    to change on the page."""


def head_index(choice: str) -> int | None:
    """A head dropdown's choice as a head number, None for the mean of the heads."""
    if choice == MEAN_OF_HEADS:
        return None
    number = choice.removeprefix("head ").strip() if isinstance(choice, str) else ""
    if not number.isdigit():
        raise ExplorerError(f"choose a head in the list, not {str(choice)[:40]!r}")
    return int(number)


def shown(piece: str) -> str:
    """A token's text with its whitespace visible: a space as ␣, a newline as ↵, a tab as ⇥."""
    return piece.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


@dataclass(frozen=True)
class Tokens:
    """A text as the model reads it: `prompt` is the text the ids encode (the chat template's rendering of it, or
    the text itself), `pieces[i]` token i's text decoded alone, `special[i]` whether it is a control token."""

    ids: tuple[int, ...]
    pieces: tuple[str, ...]
    special: tuple[bool, ...]
    prompt: str

    def rows(self) -> list[list]:
        """[position, id, text] per token, whitespace shown."""
        return [[i, token, shown(piece)] for i, (token, piece) in enumerate(zip(self.ids, self.pieces, strict=True))]

    def labels(self) -> list[str]:
        """'position: text' per token: unique, for a map's axes and the query dropdown."""
        return [f"{i}: {shown(piece)}" for i, piece in enumerate(self.pieces)]

    def html(self) -> str:
        """The tokens as coloured spans (a colour per token, cycling; control tokens framed), each titled with its
        position and id."""
        spans = []
        for i, (token, piece, special) in enumerate(zip(self.ids, self.pieces, self.special, strict=True)):
            kind = " explorer-special" if special else ""
            text = html.escape(shown(piece)).replace("↵", "↵<br>")
            colour = TOKEN_COLOURS[i % len(TOKEN_COLOURS)]
            spans.append(f"<span class='explorer-token{kind}' style='background:{colour}' title='position {i}, id "
                         f"{token}' data-id='{token}'>{text}</span>")
        return (f"<div class='explorer-tokens'><p class='explorer-count'>{len(self.ids)} tokens</p>"
                f"<div class='explorer-pieces'>{''.join(spans)}</div></div>")


@dataclass(frozen=True)
class Run:
    """One forward pass over a text: `weights` (layers, heads, T, T) float32, each query row summing to one;
    `logits` (vocab,) for the token after the text."""

    tokens: Tokens
    weights: np.ndarray
    logits: torch.Tensor

    def attention(self, layer: int, head: int | None) -> np.ndarray:
        """(T, T) weights of `layer` (from 0) and `head`, None for the mean of the heads; query rows, key columns."""
        n_layers, n_heads = self.weights.shape[:2]
        if not 0 <= layer < n_layers or (head is not None and not 0 <= head < n_heads):
            raise ExplorerError(f"choose a layer from 0 to {n_layers - 1} and a head from 0 to {n_heads - 1}")
        return self.weights[layer].mean(0) if head is None else self.weights[layer, head]

    def default_query(self) -> int:
        """The token to start from: the last " it" (the classic examples ask what it refers to), else the last."""
        pieces = [piece.strip().lower() for piece in self.tokens.pieces]
        return max((i for i, piece in enumerate(pieces) if piece == "it"), default=len(pieces) - 1)

    def strongest(self, layer: int, head: int | None, query: int, count: int = STRONGEST) -> list[list]:
        """[position, text, weight] of the `count` keys `query` attends most (at most query + 1 of them), strongest
        first."""
        if not 0 <= query < len(self.tokens.ids):
            raise ExplorerError(f"choose a token from 0 to {len(self.tokens.ids) - 1}")
        row = self.attention(layer, head)[query, :query + 1]
        order = np.argsort(-row, kind="stable")[:count]
        return [[int(k), shown(self.tokens.pieces[k]), round(float(row[k]), 4)] for k in order]


class Explorer:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, name: str = "model"):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self._special_ids = frozenset(i for i, t in tokenizer.backend.get_added_tokens_decoder().items() if t.special)
        self._runs: OrderedDict[tuple[str, bool], Run] = OrderedDict()
        self._lock = threading.Lock()  # the cache of runs, shared by every session

    @property
    def heads(self) -> list[str]:
        """The head dropdown's choices: the mean first, then each head."""
        return [MEAN_OF_HEADS, *(f"head {h}" for h in range(self.model.config.n_heads))]

    def tokens(self, text: str, as_chat: bool = False) -> Tokens:
        """`text` tokenized as the model reads it: as typed, or as one user message under the chat template."""
        if not isinstance(text, str) or not text.strip():
            raise ExplorerError("Type a text first.")
        if len(text) > MAX_TEXT_CHARS:
            raise ExplorerError(f"The text has {len(text):,} characters; the explorer takes at most "
                                f"{MAX_TEXT_CHARS:,}. Shorten it.")
        if as_chat:
            messages = [{"role": "user", "content": text}]
            try:
                prompt = self.tokenizer.apply_chat_template(messages)
            except ValueError as error:  # no template
                raise ExplorerError(f"{error}: untick “as a chat message”.") from None
            ids = self.tokenizer.encode_chat(messages)
        else:
            prompt, ids = text, self.tokenizer.encode(text, parse_special=False)
        pieces = tuple(self.tokenizer.decode([token]) for token in ids)
        return Tokens(tuple(ids), pieces, tuple(token in self._special_ids for token in ids), prompt)

    def run(self, text: str, as_chat: bool = False) -> Run:
        """The attention maps and next-token logits of `text` (see `tokens`); ExplorerError over MAX_TOKENS tokens
        or the model's context."""
        key = (text, bool(as_chat))
        with self._lock:
            if key in self._runs:
                self._runs.move_to_end(key)
                return self._runs[key]
        tokens = self.tokens(text, as_chat)
        limit = min(MAX_TOKENS, self.model.config.max_seq_len)
        if len(tokens.ids) > limit:
            raise ExplorerError(f"The text has {len(tokens.ids)} tokens; the attention maps take at most {limit}. "
                                "Shorten it.")
        with torch.inference_mode():
            logits, attentions = self.model(torch.tensor([tokens.ids]), torch.arange(len(tokens.ids)),
                                            logits_to_keep=1, return_attention=True)
        weights = torch.stack([layer[0] for layer in attentions]).numpy()  # (L, H, T, T)
        run = Run(tokens, weights, logits[0, -1])
        with self._lock:
            self._runs[key] = run
            while len(self._runs) > CACHED_RUNS:
                self._runs.popitem(last=False)
        return run

    def next_tokens(self, text: str, as_chat: bool, temperature: float, top_k: int, top_p: float,
                    min_p: float, rows: int = DISTRIBUTION_ROWS) -> tuple[Filtered, list[list]]:
        """The next-token distribution after `text` through the engine's filters, and a row per most likely token:
        [rank, text, id, probability, kept by top-k, by top-p, by min-p, probability of the draw]."""
        try:
            params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
        except ModelRequestError as error:
            raise ExplorerError(str(error)) from None
        filtered = filter_steps(self.run(text, as_chat).logits, params)
        table = []
        for rank, token in enumerate(torch.argsort(filtered.probs, descending=True, stable=True)[:rows].tolist()):
            kept = ["—" if filtered.greedy else "✓" if bool(mask[token]) else "✗"
                    for mask in (filtered.top_k, filtered.top_p, filtered.min_p)]
            table.append([rank + 1, shown(self.tokenizer.decode([token])), token,
                          round(float(filtered.probs[token]), 4), *kept, round(float(filtered.final[token]), 4)])
        return filtered, table
