"""TextStream: one sequence's token ids in, printable text deltas out.

A delta never ends inside a UTF-8 character (a token can carry part of one), and never shows any
part of a stop string: text that could be the start of a stop string is held back until the next
token decides. Decoding the whole output each step keeps this exact for every tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.tokenizer import Tokenizer


class TextStream:
    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.ids: list[int] = []
        self.text = ""  # the output so far, complete characters only, cut before a stop string
        self.emitted = 0  # characters of `text` already returned
        self.stopped = False

    def push(self, token_id: int) -> str:
        """The new text this token makes printable; sets `stopped` when a stop string appears."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # the token ends part-way through a multi-byte character
            return ""
        cut = self._first_stop(text)
        if cut is not None:
            self.text, self.stopped = text[:cut], True
            return self._emit(cut)
        self.text = text
        return self._emit(len(text) - self._held_back(text))

    def finish(self) -> str:
        """What was held back, once generation ended without a stop string."""
        return self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        delta = self.text[self.emitted:upto] if upto > self.emitted else ""
        self.emitted = max(self.emitted, upto)
        return delta

    def _first_stop(self, text: str) -> int | None:
        # Only text past what was emitted can hold a new stop string (emitted text never ends in a stop prefix).
        start = max(0, self.emitted - max((len(s) for s in self.stop), default=0))
        found = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
        return min(found) if found else None

    def _held_back(self, text: str) -> int:
        """Length of the longest tail of `text` that is a proper prefix of a stop string."""
        return max((n for s in self.stop for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
