"""The LLM API on the embedded SmolLM2: streaming, seeds, chat prompts and bad input."""

import pytest

from core import LLM
from core.text_stream import TextStream


def test_stream_joins_to_generate_and_greedy_is_deterministic(llm):
    deltas = list(llm.stream("The capital of France is", max_new_tokens=12))
    assert len(deltas) > 1
    assert "".join(deltas) == llm.generate("The capital of France is", max_new_tokens=12)
    assert "Paris" in "".join(deltas)


def test_seeded_sampling_reproduces_and_seeds_differ(llm):
    prompt = [{"role": "user", "content": "Invent a name for a cat."}]
    first = llm.generate(prompt, max_new_tokens=16, temperature=1.0, seed=7)
    assert first == llm.generate(prompt, max_new_tokens=16, temperature=1.0, seed=7)
    others = {llm.generate(prompt, max_new_tokens=16, temperature=1.0, seed=s) for s in range(3)}
    assert len(others | {first}) > 1


def test_chat_reply_stops_at_end_of_turn(llm):
    reply = llm.generate([{"role": "user", "content": "Say hello."}], max_new_tokens=200)
    assert reply and "<|im_end|>" not in reply and "<|im_start|>" not in reply
    assert len(llm.tokenizer.encode(reply)) < 200  # ended on <|im_end|>, not on the budget


def test_max_new_tokens_is_respected(llm):
    text = llm.generate("Count: 1, 2, 3,", max_new_tokens=5)
    assert len(llm.tokenizer.encode(text)) <= 5
    assert llm.generate("Count: 1, 2, 3,", max_new_tokens=0) == ""


def test_streamed_text_never_splits_a_utf8_character(llm):
    text = "héllo 🌍 世界 👩‍👩‍👧 ok"
    ids = llm.tokenizer.encode(text)
    assert len(ids) > len(text.split())  # some characters span several tokens
    stream = TextStream(llm.tokenizer)
    deltas = [stream.push(i) for i in ids] + [stream.finish()]
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)
    assert "" in deltas  # some token ended mid-character and was held back


@pytest.mark.parametrize("temperature", [-0.5, float("nan"), float("inf"), "hot"])
def test_bad_temperature_is_rejected(llm, temperature):
    with pytest.raises(ValueError, match="temperature"):
        llm.generate("hi", temperature=temperature)


def test_prompt_longer_than_the_context_is_rejected(llm):
    with pytest.raises(ValueError, match="context holds 4096"):
        llm.generate("word " * 9000, max_new_tokens=1)


def test_malformed_messages_are_rejected(llm):
    with pytest.raises(ValueError, match="role"):
        llm.generate([{"text": "no role"}])


def test_unknown_dtype_is_rejected():
    with pytest.raises(ValueError, match="dtype must be one of"):
        LLM.load(dtype="int3")
