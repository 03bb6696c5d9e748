"""TextStream: one sequence's token ids in, printable text deltas out.

A delta never ends inside a UTF-8 character (a token can carry part of one), and never shows any
part of a stop string: text that could be the start of a stop string is held back until the next
token decides. This runs for every row of every engine step, under the engine's lock, so a token
costs the same however long the output and however many and long the stop strings:
- Each token decodes a window of a few tokens, not the whole output: the tokens since the last
  complete character, after the window before them as context (as vLLM does), so a decoder that
  spells a sequence's first token differently (SentencePiece drops its space) still gives the text
  a whole decode gives (tested for byte-level BPE and SentencePiece-style decoders).
- Stop strings are matched by an Aho-Corasick automaton fed each new character once. Generation
  stops at the first stop string to be completed (the longest, if several end on the same
  character), wherever the token boundaries fall.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from core.tokenizer import Tokenizer


class StopMatcher:
    """Aho-Corasick over the stop strings, fed one character at a time.

    A node is a prefix of some stop string; the matcher sits at the longest one that ends the text
    fed so far, which is exactly the text a stream must hold back.
    """

    def __init__(self, stop: Sequence[str]):
        self.children: list[dict[str, int]] = [{}]
        self.depth = [0]  # the node's prefix length
        self.complete = [0]  # length of the longest stop string ending the node's prefix (0: none)
        for string in stop:
            node = 0
            for char in string:
                node = self.children[node].get(char) or self._add(node, char)
            self.complete[node] = len(string)
        self.fallback = self._fallbacks()
        self.node = 0

    def _add(self, parent: int, char: str) -> int:
        self.children.append({})
        self.depth.append(self.depth[parent] + 1)
        self.complete.append(0)
        self.children[parent][char] = len(self.children) - 1
        return len(self.children) - 1

    def _fallbacks(self) -> list[int]:
        """For each node, the node of its longest proper suffix that is also a prefix (breadth first)."""
        fallback = [0] * len(self.children)
        order = deque(self.children[0].values())
        while order:
            node = order.popleft()
            for char, child in self.children[node].items():
                fallback[child] = self._step(fallback[node], char, fallback)
                # A stop string ending inside this prefix ends here too; a longer one of the node's own wins.
                self.complete[child] = self.complete[child] or self.complete[fallback[child]]
                order.append(child)
        return fallback

    def _step(self, node: int, char: str, fallback: list[int]) -> int:
        while node and char not in self.children[node]:
            node = fallback[node]
        return self.children[node].get(char, 0)

    def feed(self, char: str) -> int:
        """Advance by one character; the length of the stop string it completes, 0 if none."""
        self.node = self._step(self.node, char, self.fallback)
        return self.complete[self.node]

    @property
    def held_back(self) -> int:
        """Length of the longest tail of the text fed that is a prefix of a stop string."""
        return self.depth[self.node]


class TextStream:
    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.matcher = StopMatcher(stop)
        self.ids: list[int] = []
        self.text = ""  # the output so far, complete characters only, cut before a stop string
        self.emitted = 0  # characters of `text` already returned
        self.stopped = False
        self._context = self._read = 0  # ids[_context:_read] decode as context; ids[_read:] are not in `text` yet

    def push(self, token_id: int) -> str:
        """The new text this token makes printable; sets `stopped` when a stop string appears."""
        self.ids.append(token_id)
        new = self._decode_new()
        for i, char in enumerate(new):
            if found := self.matcher.feed(char):
                cut = len(self.text) + i + 1 - found
                self.text, self.stopped = (self.text + new)[:cut], True
                return self._emit(cut)
        self.text += new
        return self._emit(len(self.text) - self.matcher.held_back)

    def finish(self) -> str:
        """What was held back, once generation ended without a stop string."""
        return self._emit(len(self.text))

    def _decode_new(self) -> str:
        """The text the tokens not yet in `text` add; "" while it ends part-way through a character."""
        context = self.tokenizer.decode(self.ids[self._context: self._read])
        window = self.tokenizer.decode(self.ids[self._context:])
        if window.endswith("\ufffd"):  # the token ends part-way through a multi-byte character
            return ""
        self._context, self._read = self._read, len(self.ids)
        return window[len(context):]

    def _emit(self, upto: int) -> str:
        delta = self.text[self.emitted:upto] if upto > self.emitted else ""
        self.emitted = max(self.emitted, upto)
        return delta
