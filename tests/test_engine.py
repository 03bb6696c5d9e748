"""The continuous-batching engine on a tiny random Llama: it computes what a full forward computes.

Requests of different lengths share decode steps, join and leave at any step, reuse cached prefixes
and may be abandoned half-way; none of it may change a single logit.
"""

import threading

import pytest
import torch

from core import LLM, EngineConfig, SamplingParams
from core.errors import ContextLengthError
from core.loading import load_model

from conftest import save_tiny_checkpoint

NO_STOP = {2: -1e4}  # the random model would otherwise end on <|im_end|> whenever it likes
PROMPTS = ["The quick brown fox", "Pack my box with five dozen liquor jugs! The quick", "def", "lazy dog. " * 6]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_checkpoint("llama", directory)
    return load_model(str(directory))[:2]


def make_llm(tiny, **engine) -> LLM:
    return LLM(*tiny, engine=EngineConfig(max_seq_len=128, **engine))


def test_batched_cached_decoding_equals_full_recompute(tiny):
    """Logits at every step of every sequence in a mixed-length batch equal a full forward over prompt + output."""
    llm = make_llm(tiny)
    recorded = {prompt: [] for prompt in PROMPTS}

    def recorder(prompt):
        return lambda ids, logits: recorded[prompt].append(logits.clone()) or logits

    streams = [llm.stream(p, max_new_tokens=10, logit_bias=NO_STOP, logits_processor=recorder(p)) for p in PROMPTS]
    for stream in streams:
        "".join(stream)
    for prompt, stream in zip(PROMPTS, streams, strict=True):
        ids = stream.prompt_ids + stream.generated
        with torch.no_grad():
            full = llm.model(torch.tensor([ids]), torch.arange(len(ids)))[0]  # (T, vocab)
        steps = torch.stack(recorded[prompt])  # (10, vocab)
        assert len(steps) == 10 == len(stream.generated)
        assert (steps - full[len(stream.prompt_ids) - 1: -1]).abs().max().item() < 1e-4, prompt


def test_concurrent_requests_equal_sequential_ones(tiny):
    sequential = [make_llm(tiny).generate(p, max_new_tokens=12, logit_bias=NO_STOP) for p in PROMPTS]
    llm = make_llm(tiny, max_batch=3)  # four requests, three rows: one waits for a free row
    results = [None] * len(PROMPTS)

    def run(i):
        results[i] = llm.generate(PROMPTS[i], max_new_tokens=12, logit_bias=NO_STOP)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == sequential
    assert llm.generate_batch(PROMPTS, max_new_tokens=12, logit_bias=NO_STOP) == sequential


def test_seeded_sampling_does_not_depend_on_the_batch(tiny):
    alone = make_llm(tiny).generate(PROMPTS[0], max_new_tokens=12, temperature=1.0, seed=3, logit_bias=NO_STOP)
    batch = make_llm(tiny).generate_batch(PROMPTS, max_new_tokens=12, temperature=1.0, seed=3, logit_bias=NO_STOP)
    assert batch[0] == alone
    assert len(set(make_llm(tiny).generate_batch([PROMPTS[0]] * 4, max_new_tokens=12, temperature=1.0,
                                                  logit_bias=NO_STOP))) > 1  # unseeded draws differ


def test_prefix_cache_reuses_a_shared_prefix_without_changing_output(tiny):
    shared = "System: you are a fox expert. Context: the quick brown fox jumps over the lazy dog. "
    questions = ["Q: what jumps?", "Q: over what?"]
    cold = [make_llm(tiny, prefix_cache_bytes=0).generate(shared + q, max_new_tokens=8, logit_bias=NO_STOP)
            for q in questions]
    llm = make_llm(tiny)
    warm = [llm.generate(shared + q, max_new_tokens=8, logit_bias=NO_STOP) for q in questions]
    assert warm == cold
    assert llm.engine.prefix_cache.hits == 1
    assert llm.engine.prefix_cache.tokens_reused >= len(llm.tokenizer.encode(shared)) - 2


def test_prefix_cache_stays_within_its_budget(tiny):
    llm = make_llm(tiny, prefix_cache_bytes=200_000)
    per_token = 2 * 2 * 2 * 16 * 4  # k and v, 2 layers, 2 kv heads, head_dim 16, float32
    for i in range(20):
        llm.generate(f"prompt number {i} " * 3, max_new_tokens=1)
        assert llm.engine.prefix_cache.used_bytes <= 200_000
    assert 0 < len(llm.engine.prefix_cache) < 20
    assert llm.engine.prefix_cache.used_bytes >= per_token


def test_an_abandoned_stream_frees_its_row(tiny):
    llm = make_llm(tiny, max_batch=1)
    stream = llm.stream(PROMPTS[0], max_new_tokens=50, logit_bias=NO_STOP)
    next(iter(stream))
    stream_iter = iter(stream)
    stream_iter.close()  # the reader walks away
    del stream_iter
    assert llm.generate(PROMPTS[1], max_new_tokens=5, logit_bias=NO_STOP)  # would wait forever on a held row


def test_stop_string_ends_generation_and_is_not_returned(tiny):
    llm = make_llm(tiny)
    full = llm.generate(PROMPTS[0], max_new_tokens=20, logit_bias=NO_STOP)
    stop = full[7:10]
    stream = llm.stream(PROMPTS[0], max_new_tokens=20, logit_bias=NO_STOP, stop=[stop])
    text = "".join(stream)
    assert text == full[: full.index(stop)]
    assert stream.finish_reason == "stop"


def test_finish_reasons_and_token_counts(tiny):
    llm = make_llm(tiny)
    stream = llm.stream(PROMPTS[0], max_new_tokens=5, logit_bias=NO_STOP)
    "".join(stream)
    assert (stream.finish_reason, stream.completion_tokens) == ("length", 5)
    stream = llm.stream(PROMPTS[0], max_new_tokens=5, logit_bias={2: 1e4})  # forced end of turn
    assert "".join(stream) == ""
    assert (stream.finish_reason, stream.completion_tokens) == ("stop", 0)


def test_generation_stops_at_the_context_end(tiny):
    llm = make_llm(tiny)
    prompt = "fox " * 20
    n = len(llm.tokenizer.encode(prompt))
    stream = llm.stream(prompt, max_new_tokens=None, logit_bias=NO_STOP)  # None: as many as the context holds
    "".join(stream)
    assert stream.finish_reason == "length" and n + stream.completion_tokens == 128


def test_error_in_a_request_reaches_its_reader_and_spares_the_engine(tiny):
    llm = make_llm(tiny)

    def broken(ids, logits):
        raise RuntimeError("processor failed")

    with pytest.raises(RuntimeError, match="processor failed"):
        llm.generate(PROMPTS[0], max_new_tokens=5, logits_processor=broken)
    assert llm.generate(PROMPTS[0], max_new_tokens=3, logit_bias=NO_STOP)


def test_bad_requests_are_rejected_before_queueing(tiny):
    llm = make_llm(tiny)
    with pytest.raises(ContextLengthError, match="context holds 128"):
        llm.generate("fox " * 200)
    with pytest.raises(ContextLengthError, match="max_new_tokens is 200; the context holds 128"):
        llm.generate("fox", max_new_tokens=200)  # the prompt fits, but not with the output asked for
    with pytest.raises(ValueError, match="empty"):
        llm.engine.submit([], SamplingParams())
    with pytest.raises(TypeError, match="unexpected keyword"):
        llm.generate("fox", temprature=0.5)


def test_kv_budget_is_checked_up_front(tiny):
    with pytest.raises(ValueError, match="needs .* GiB, over the .* budget"):
        LLM(*tiny, engine=EngineConfig(max_batch=64, max_seq_len=128, kv_cache_bytes=1000))
