"""Streaming text: stop strings split across tokens are caught and never leak; UTF-8 is never split."""

import random

import pytest

from core.text_stream import TextStream
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
