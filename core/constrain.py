"""Constrained decoding: a per-token mask that forces output into a set of strings, a regex or a JSON schema.

Built on llguidance, which turns each spec into a grammar and computes, from a token trie of the
vocabulary, which tokens may come next. The tokenizer side is converted once per `Tokenizer` and the
grammar once per `TokenConstraint.compile`; a sequence then pays only for its mask and its step.

Does not touch logits or sample: the engine applies `ConstraintState.allowed` itself. Under a token budget
(`ConstraintState.limit`) it keeps the output closable: free text (a JSON string without `maxLength`, a
regex like `.*`) runs until the budget only just holds a way to finish, which is then taken (close the
string, the array, the object). Each sequence holds such a finish (a plan); a sampled token is taken only
if a finish from after it still fits, found by `_Finish`: a greedy path over the grammar's forced bytes and
single-character tokens, closing characters (`"`, `]`, `}`) first. Before generating, the same search also
tries the other characters at each choice, to find the shortest output and refuse a budget that cannot
hold it. Per token this costs tens of microseconds (trying the plan in hand, and a search when the output's
structure changed), against milliseconds for the model's step; without a budget, nothing.
"""

from __future__ import annotations

import json
import string
import weakref
from dataclasses import dataclass
from typing import Any

import llguidance
import numpy as np
import torch

from core.json_schema import check_supported, map_schema
from core.tokenizer import Tokenizer

# Compact, one-line JSON: with flexible whitespace a small model can emit newlines forever. The
# separators match json.dumps, the spelling models have seen most. A schema's own "x-guidance" wins.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


# The characters a finish is built from, in the order tried: closers first, then what fills a required value
# most briefly (a digit), then the rest of printable ASCII. Only characters that are one token count.
_TRIED_FIRST = '"]})' + string.digits + ",:.-_@/ " + string.ascii_letters
CLOSING_ORDER = _TRIED_FIRST + "".join(sorted(set(string.printable) - set(_TRIED_FIRST) - set("\r\x0b\x0c")))
# Moves (tokens taken) a search for a finish may make: a path takes one per character it chooses and one per
# forced run. Before generating, the search looks hard for the shortest; per token it follows the greedy path
# only, and a token after which that path does not fit is refused (the plan in hand always fits).
SEARCH_MOVES_FIRST = 2048
SEARCH_MOVES_STEP = 32  # plus twice the tokens of the finish in hand
SEARCH_BRANCHES = 3  # characters tried at each choice when looking for the shortest
SEARCH_DEPTH = 200  # moves along one finish
RECHECKED = 32  # when a sampled token leaves no room to finish: how many of the likeliest allowed ones are checked


@dataclass(frozen=True)
class _Vocab:
    """What constraints need of one tokenizer: llguidance's view of it and the one-token closing characters."""

    ll: llguidance.LLTokenizer
    closers: np.ndarray  # token ids of CLOSING_ORDER's one-token characters, in that order
    stop_ids: frozenset[int]


_VOCABS: weakref.WeakKeyDictionary[Tokenizer, _Vocab] = weakref.WeakKeyDictionary()


def _vocab(tokenizer: Tokenizer) -> _Vocab:
    """llguidance's view of `tokenizer` (token bytes, trie, EOS ids) and its closers; ~0.25 s to build, so cached."""
    vocab = _VOCABS.get(tokenizer)
    if vocab is None:
        ll = llguidance.LLTokenizer(tokenizer.backend.to_str(), n_vocab=tokenizer.vocab_size,
                                    eos_token=list(tokenizer.stop_ids))
        closers = np.array([ids[0] for ids in map(ll.tokenize_str, CLOSING_ORDER) if len(ids) == 1])
        vocab = _VOCABS[tokenizer] = _Vocab(ll, closers, frozenset(tokenizer.stop_ids))
    return vocab


def _completes(matcher: llguidance.LLMatcher, tokens: list[int]) -> bool:
    """Whether `tokens` take the matcher from where it stands to a complete output; it is left where it was."""
    consumed = matcher.try_consume_tokens(tokens)
    complete = consumed == len(tokens) and matcher.is_accepting()
    matcher.rollback(consumed)
    return complete


@dataclass
class _Finish:
    """A search for tokens that take a matcher from where it stands to a complete output, shortest first.

    The first path is greedy: the forced bytes (llguidance's fast-forward tokens) as one move, elsewhere the
    first allowed character of CLOSING_ORDER (or, where none is, the allowed token of fewest bytes). It closes
    what is open as soon as the grammar lets it, which is nearly always shortest; `improve` then tries, at
    each choice along the best path so far, the other allowed characters followed greedily, and keeps what is
    shorter (an empty array `[]` rather than `[""]`). A path's length is that of its text's own tokenisation
    when that is shorter and also completes the output. The matcher is left as it was found.
    """

    matcher: llguidance.LLMatcher
    vocab: _Vocab
    moves: int  # tokens the search may take before it gives up

    def first(self, need: int) -> list[int] | None:
        """The greedy path's tokens if they are at most `need`, else None."""
        path = self._greedy([])
        tokens = None if path is None else self._tokens(path, need)
        return tokens if tokens is not None and len(tokens) <= need else None

    def shortest(self, need: int) -> list[int] | None:
        """A finish in at most `need` tokens, or the shortest found when none fits; None when none completes."""
        best = self._greedy([])
        best_tokens = None if best is None else self._tokens(best, need)
        improved = best is not None
        while improved and len(best_tokens) > need and self.moves > 0:
            improved = False
            for at in (i for i, (_, choice) in enumerate(best) if choice):
                for other in self._alternatives(best[:at], best[at][0]):
                    path = self._greedy([*best[:at], (other, True)])
                    tokens = None if path is None else self._tokens(path, need)
                    if tokens is not None and len(tokens) < len(best_tokens):
                        best, best_tokens, improved = path, tokens, True
                        break
                if improved or self.moves <= 0:
                    break
        return best_tokens

    def _greedy(self, prefix: list[tuple[list[int], bool]]) -> list[tuple[list[int], bool]] | None:
        """`prefix` (moves from this state) and then greedy moves to a complete output; None past the limits."""
        path, taken = list(prefix), self._enter(prefix)
        try:
            if taken is None:
                return None
            while not self.matcher.is_accepting():
                move = self._move() if self.moves > 0 and len(path) < SEARCH_DEPTH else None
                if move is None:
                    return None
                path.append(move)
                taken += len(move[0])
            return path
        finally:
            self.matcher.rollback(taken or 0)

    def _enter(self, prefix: list[tuple[list[int], bool]]) -> int | None:
        """Consume `prefix`'s tokens: how many, or None (and nothing consumed) when they are not all allowed."""
        tokens = [token for move, _ in prefix for token in move]
        consumed = self.matcher.try_consume_tokens(tokens)
        if consumed == len(tokens):
            return consumed
        self.matcher.rollback(consumed)
        return None

    def _move(self) -> tuple[list[int], bool] | None:
        """Take the next greedy move: (its tokens, whether it was a choice rather than forced)."""
        forced = self.matcher.compute_ff_tokens()
        if forced:
            taken = self.matcher.try_consume_tokens(forced)
            self.moves -= max(taken, 1)
            return (forced[:taken], False) if taken else None
        self.moves -= 1
        # The first closer (`"`) is tried blind: it is usually allowed, and cheaper to try than a mask to compute.
        first = int(self.vocab.closers[0])
        if self.matcher.try_consume_tokens([first]) == 1:
            return [first], True
        choices = self._choices()
        if choices and self.matcher.try_consume_tokens(choices[:1]) == 1:
            return choices[:1], True
        return None

    def _alternatives(self, prefix: list[tuple[list[int], bool]], taken: list[int]) -> list[list[int]]:
        """The other first moves at the choice after `prefix`, up to SEARCH_BRANCHES - 1 of them."""
        consumed = self._enter(prefix)
        if consumed is None:
            return []
        try:
            return [[token] for token in self._choices() if [token] != taken][:SEARCH_BRANCHES - 1]
        finally:
            self.matcher.rollback(consumed)

    def _choices(self) -> list[int]:
        """The allowed closers, in order; where none is, the allowed tokens of fewest bytes."""
        words = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        closers = self.vocab.closers
        allowed = closers[(words[closers >> 3] >> (closers & 7)) & 1 == 1]
        if len(allowed):
            return allowed.tolist()
        bits = np.unpackbits(words, bitorder="little")
        ids = [int(i) for i in np.flatnonzero(bits)[:512] if int(i) not in self.vocab.stop_ids]
        return sorted(ids, key=lambda i: len(self.vocab.ll.decode_bytes([i])))[:SEARCH_BRANCHES]

    def _tokens(self, path: list[tuple[list[int], bool]], need: int) -> list[int]:
        """The path's tokens; over `need`, its text's own tokenisation where that is shorter and completes too."""
        tokens = [token for move, _ in path for token in move]
        if len(tokens) <= need:
            return tokens
        retokenized = self.vocab.ll.tokenize_bytes(self.vocab.ll.decode_bytes(tokens))
        return retokenized if len(retokenized) < len(tokens) and _completes(self.matcher, retokenized) else tokens


class TokenConstraint:
    """A compiled spec, shared by every sequence that must follow it; `start` gives one matcher per sequence."""

    def __init__(self, tokenizer: Tokenizer, matcher: llguidance.LLMatcher, description: str):
        self.tokenizer = tokenizer
        self.description = description
        self._matcher = matcher  # never advanced: a template that `start` copies

    @classmethod
    def compile(cls, tokenizer: Tokenizer, *, json_schema: dict | type | None = None,
                choices: list[str] | None = None, regex: str | None = None) -> TokenConstraint:
        """Exactly one of the three. Raises ValueError with a clear message for an invalid schema/regex/empty choices.

        `json_schema` is a dict or a Pydantic model class; objects that do not say otherwise get
        `additionalProperties: false` so the model cannot add keys without end. `regex` uses Rust
        `regex` syntax with an ASCII `\\d`, and must match the whole output.
        """
        given = [name for name, value in (("json_schema", json_schema), ("choices", choices), ("regex", regex))
                 if value is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of json_schema, choices, regex; got {given or 'none'}")
        if json_schema is not None:
            schema = _schema_dict(json_schema)
            check_supported(schema)
            grammar = llguidance.LLMatcher.grammar_from_json_schema(map_schema(schema, _closed), defaults=JSON_OPTIONS)
            description = f"JSON schema {json.dumps(schema)[:200]}"
        elif choices is not None:
            grammar = llguidance.LLMatcher.grammar_from_lark(_choices_lark(choices))
            description = f"choices {choices!r}"
        else:
            if not isinstance(regex, str):
                raise ValueError(f"regex must be a string, got {type(regex).__name__}")
            # \d means [0-9]: in Rust's Unicode syntax it also admits digits like '🯸', and models use them.
            grammar = llguidance.LLMatcher.grammar_from_lark(f"start: /{llguidance.regex_to_lark(regex, 'd')}/")
            description = f"regex {regex!r}"
        # llguidance reports a bad grammar as an error state, not an exception; building it is the check.
        matcher = llguidance.LLMatcher(_vocab(tokenizer).ll, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(f"invalid {description}: {matcher.get_error()}")
        return cls(tokenizer, matcher, description)

    def start(self) -> ConstraintState:
        """A fresh matcher for one sequence; copying the template shares the compiled grammar."""
        return ConstraintState(self._matcher.deep_copy(), self.tokenizer, self.description)


class ConstraintState:
    """Where one sequence stands in its constraint. Not thread-safe; one per sequence.

    Under a budget (`limit`) it holds a plan: tokens that finish the output from here within the budget
    left. A token is taken only if a plan exists after it; the plan's first token always qualifies, so the
    output can always be closed in time.
    """

    def __init__(self, matcher: llguidance.LLMatcher, tokenizer: Tokenizer, description: str):
        self._matcher = matcher
        self._n_tokens = tokenizer.vocab_size  # ids past the tokenizer's vocabulary are never allowed
        self._vocab = _vocab(tokenizer)
        self._description = description
        self._budget: int | None = None  # tokens the output may still take; None: no limit
        self._plan: list[int] = []  # under a budget: a complete finish from here that fits it
        self._checked: dict[int, list[int] | None] = {}  # token -> its plan, from `within_budget`

    def limit(self, max_new_tokens: int) -> None:
        """Keep the output complete within `max_new_tokens` tokens; call before the first `advance`.

        Raises ValueError, naming both numbers, when the shortest output found takes more. A grammar whose
        shortest output the search cannot find within its limits is left unbudgeted (no error, no guarantee).
        """
        plan = _Finish(self._matcher, self._vocab, SEARCH_MOVES_FIRST).shortest(max_new_tokens)
        if plan is None:
            return
        if len(plan) > max_new_tokens:
            raise ValueError(f"a budget of {max_new_tokens} tokens (max_new_tokens; max_tokens on a server) cannot "
                             f"hold any output that matches {self._description}: the shortest takes {len(plan)} "
                             f"tokens; allow at least {len(plan)}")
        self._budget, self._plan = max_new_tokens, plan

    def allowed(self, vocab_size: int) -> torch.Tensor:
        """Bool (vocab_size,), True = allowed next; the stop ids are allowed exactly when the output is complete.

        Under a budget, not every allowed token leaves room to finish: `advance` says, `within_budget` narrows.
        """
        assert vocab_size >= self._n_tokens, f"model vocab {vocab_size} < tokenizer vocab {self._n_tokens}"
        words = self._matcher.compute_bitmask()  # one bit per token, little-endian within each byte
        if self._matcher.is_error():  # a parser resource limit, not a bad token: advance checks those
            raise RuntimeError(f"constraint {self._description} failed: {self._matcher.get_error()}")
        # numpy, not torch: these ops stay single-threaded, so a busy core cannot stall them (torch's can).
        mask = np.zeros(vocab_size, dtype=np.bool_)
        bits = np.unpackbits(np.frombuffer(words, dtype=np.uint8), bitorder="little")  # (32 * ceil(n / 32),)
        mask[:self._n_tokens] = bits[:self._n_tokens].view(np.bool_)
        return torch.from_numpy(mask)

    def advance(self, token_id: int) -> bool:
        """Consume the sampled token: True when taken. False when the budget left could not finish the output after
        it (the state is as it was; sample again from `within_budget`). One the mask did not allow raises ValueError
        and leaves the state as it was."""
        if self._matcher.is_stopped():  # complete and cannot grow: llguidance admits only a stop id, as a no-op
            ok = token_id in self._vocab.stop_ids
        else:
            ok = 0 <= token_id < self._n_tokens and self._matcher.try_consume_tokens([token_id]) == 1
        if not ok:
            raise ValueError(f"token {token_id} is not allowed here by the constraint {self._description}")
        if self._budget is None or token_id in self._vocab.stop_ids:
            return True
        if self._plan and token_id == self._plan[0]:
            plan = self._plan[1:]
        elif token_id in self._checked:
            plan = self._checked[token_id]
        else:
            plan = self._finish(self._budget - 1)
        if plan is None:
            self._matcher.rollback(1)
            return False
        self._budget, self._plan, self._checked = self._budget - 1, plan, {}
        return True

    def within_budget(self, logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """`allowed` narrowed to tokens after which the output can still be finished within the budget: the plan's
        next token (or a stop id, where the output is complete) and those of the RECHECKED likeliest by `logits`
        that leave room. Never empty; call after `advance` refused a sampled token."""
        narrowed = torch.zeros_like(allowed)
        if self._plan:
            narrowed[self._plan[0]] = True
        else:  # nothing left to write: the output is complete, so the stop ids are allowed
            narrowed[sorted(self._vocab.stop_ids)] = allowed[sorted(self._vocab.stop_ids)]
        scores = logits.float().masked_fill(~allowed, -torch.inf)
        for token_id in scores.topk(min(RECHECKED, int(allowed.sum()))).indices.tolist():
            fresh = token_id not in self._vocab.stop_ids and token_id not in self._checked
            if fresh and self._matcher.try_consume_tokens([token_id]) == 1:
                self._checked[token_id] = self._finish(self._budget - 1)
                self._matcher.rollback(1)
            if token_id in self._vocab.stop_ids or self._checked.get(token_id) is not None:
                narrowed[token_id] = True
        return narrowed

    def _finish(self, need: int) -> list[int] | None:
        """A finish in at most `need` tokens from here: the one in hand if it still completes the output (more
        free text leaves it valid, and trying it is cheaper than a search), else the first the search finds."""
        if len(self._plan) <= need and _completes(self._matcher, self._plan):
            return self._plan
        return _Finish(self._matcher, self._vocab, SEARCH_MOVES_STEP + 2 * len(self._plan)).first(need)

    @property
    def done(self) -> bool:
        """True when nothing more may be generated: a stop id was consumed, or the output is complete and cannot grow.

        In the second case the engine stops without sampling; the only token `allowed` still admits is a stop id.
        """
        return self._matcher.is_stopped()


def _schema_dict(json_schema: Any) -> dict:
    if isinstance(json_schema, type) and hasattr(json_schema, "model_json_schema"):
        return json_schema.model_json_schema()
    if not isinstance(json_schema, dict):
        raise ValueError(f"json_schema must be a dict or a Pydantic model class, got {type(json_schema).__name__}")
    return json_schema


def _closed(node: dict) -> dict:
    """`node`, forbidding extra keys if it lists properties and says neither additionalProperties nor patternProperties.

    The result is stricter than the input, so whatever it admits still validates against the original.
    An `allOf` of partial objects would turn contradictory: such schemas should say additionalProperties.
    """
    if "properties" in node and "additionalProperties" not in node and "patternProperties" not in node:
        node["additionalProperties"] = False
    return node


def _choices_lark(choices: Any) -> str:
    """`start: "a" | "b"`: a JSON string literal is also a valid Lark one (quotes and backslashes escaped)."""
    if isinstance(choices, str) or not choices:
        raise ValueError(f"choices must be a non-empty list of strings, got {choices!r}")
    if not all(isinstance(choice, str) and choice for choice in choices):
        raise ValueError(f"every choice must be a non-empty string, got {choices!r}")
    return "start: " + " | ".join(json.dumps(choice, ensure_ascii=False) for choice in choices)
