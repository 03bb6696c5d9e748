"""Streaming text: stop strings split across tokens are caught and never leak; UTF-8 is never split.

The fast paths are checked against slow references: decoding a window of tokens against decoding the whole
output, the stop matcher (an automaton) against brute force for what it holds back and where it cuts.
"""

import random

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

from core.text_stream import StopMatcher, TextStream
from core.tokenizer import Tokenizer

from conftest import tiny_bpe_tokenizer

TEXT = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!"


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(tiny_bpe_tokenizer(), None, {}, [2])


def run(tokenizer, ids, stop):
    stream = TextStream(tokenizer, stop)
    deltas = []
    for token_id in ids:
        deltas.append(stream.push(token_id))
        if stream.stopped:
            break
    else:
        deltas.append(stream.finish())
    return deltas, stream


def test_stop_string_across_token_boundaries_never_leaks(tokenizer):
    ids = tokenizer.encode(TEXT)
    rng = random.Random(0)
    for _ in range(200):
        start = rng.randrange(1, len(TEXT) - 4)
        stop = TEXT[start: start + rng.randrange(2, 8)]
        deltas, stream = run(tokenizer, ids, [stop, "never appears"])
        expected = TEXT[: TEXT.index(stop)]
        assert "".join(deltas) == expected, stop
        assert stream.stopped
        shown = ""
        for delta in deltas:  # at no point has the reader seen text beyond the cut
            shown += delta
            assert expected.startswith(shown)


def test_without_a_match_everything_is_emitted(tokenizer):
    deltas, stream = run(tokenizer, tokenizer.encode(TEXT), ["jugs!!", "xyz"])
    assert "".join(deltas) == TEXT and not stream.stopped
    assert deltas[-1] == "jugs!"  # held back as a possible start of "jugs!!" until the end


def test_multibyte_characters_are_never_split(tokenizer):
    text = "naïve café 🤖 日本語"
    deltas, _ = run(tokenizer, tokenizer.encode(text), [])
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
    assert "" in deltas  # the byte-level vocabulary needs several tokens for some characters


def brute_held_back(text, stop):
    return max((n for s in stop for n in range(1, len(s)) if text.endswith(s[:n])), default=0)


def brute_cut(text, stop):
    """Where the output ends: at the start of the first stop string to be completed (the longest of those
    ending on the same character); None when none appears."""
    for end in range(1, len(text) + 1):
        found = [len(s) for s in stop if text[:end].endswith(s)]
        if found:
            return end - max(found)
    return None


def random_stops(rng, alphabet="ab c"):
    return ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 6))) for _ in range(rng.randrange(1, 5))]


def test_matcher_holds_back_exactly_the_longest_tail_that_starts_a_stop_string():
    rng = random.Random(1)
    for _ in range(300):
        stop = random_stops(rng)
        matcher, text = StopMatcher(stop), ""
        for char in "".join(rng.choice("ab c") for _ in range(30)):
            text += char
            completed = matcher.feed(char)
            assert completed == max((len(s) for s in stop if text.endswith(s)), default=0), (stop, text)
            if not completed:
                assert matcher.held_back == brute_held_back(text, stop), (stop, text)


def test_output_is_cut_at_the_first_completed_stop_string_whatever_the_tokens(tokenizer):
    """Overlapping and nested stop strings (e.g. "quick" and "ui") end the output where the first one ends,
    even when one token carries several of them."""
    rng = random.Random(2)
    words = TEXT.split()
    for _ in range(300):
        text = " ".join(rng.choice(words) for _ in range(8))
        start = rng.randrange(len(text) - 6)
        outer = text[start: start + rng.randrange(3, 7)]  # a stop string, and another inside it ending earlier
        inner = outer[1: rng.randrange(2, len(outer))]
        stop = [outer, inner, *random_stops(rng, alphabet="abcdefghijklmnopqrstuvwxyz ")]
        deltas, stream = run(tokenizer, tokenizer.encode(text), stop)
        cut = brute_cut(text, stop)
        assert "".join(deltas) == (text if cut is None else text[:cut]), (text, stop)
        assert stream.stopped == (cut is not None)


def sentencepiece_style_tokenizer():
    """Words with SentencePiece's word-start marker, whose decoder drops the space before a sequence's first word:
    text that depends on where a decode starts."""
    words = ["<unk>", "\u2581the", "\u2581fox", "s", "\u2581", "jump", "ed", "\u2581over", "\u2581caf\u00e9", ","]
    backend = HFTokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    return Tokenizer(backend, None, {}, [])


@pytest.mark.parametrize("kind", ["byte-level", "sentencepiece-style"])
def test_decoding_a_window_shows_what_decoding_everything_shows(kind, tokenizer):
    """Random ids, bytes that make no character included: after each token the text shown is the whole decode
    (held back while it ends part-way through a character)."""
    tokenizer = tokenizer if kind == "byte-level" else sentencepiece_style_tokenizer()
    rng = random.Random(3)
    for _ in range(200):
        ids = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randrange(1, 30))]
        stream, shown = TextStream(tokenizer), ""
        for n, token_id in enumerate(ids, 1):
            shown += stream.push(token_id)
            whole = tokenizer.decode(ids[:n])
            if not whole.endswith("\ufffd"):
                assert shown == whole, ids[:n]
        assert whole.startswith(shown + stream.finish())


def test_a_token_decodes_a_few_tokens_however_long_the_output(tokenizer):
    decoded = []  # how many ids each decode call was given

    class Counting(Tokenizer):
        def decode(self, ids, skip_special_tokens=False):
            decoded.append(len(ids))
            return super().decode(ids, skip_special_tokens)

    stream = TextStream(Counting(tokenizer.backend, None, {}, [2]), ["never appears"])
    ids = tokenizer.encode(TEXT * 20)
    text = "".join(stream.push(i) for i in ids) + stream.finish()
    assert text == TEXT * 20 and len(ids) > 300
    assert max(decoded) <= 2
