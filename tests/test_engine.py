"""The continuous-batching engine on a tiny random Llama: it computes what a full forward computes.

Requests of different lengths share decode steps, join and leave at any step, reuse cached prefixes,
prefill in chunks and may be abandoned half-way; none of it may change a single logit. One request
can neither break nor stall the others: its errors end it alone, its stop strings cost it alone.
"""

import itertools
import math
import statistics
import threading
import time

import pytest
import torch

from core import LLM, EngineConfig, SamplingParams
from core import engine as engine_module
from core.errors import ContextLengthError, ModelRequestError
from core.kv_cache import KVCache
from core.loading import load_model
from core.sampling import MAX_STOP_CHARS, MAX_STOP_STRINGS

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


@pytest.fixture(scope="module")
def tiny_int4(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-llama-int4")
    save_tiny_checkpoint("llama", directory)
    return load_model(str(directory), dtype="int4")[:2]


@pytest.mark.parametrize("representation", ["float32", "int4"])
@pytest.mark.parametrize("prefill_chunk", [256, 3])
def test_batched_cached_decoding_equals_full_recompute(request, representation, prefill_chunk):
    """Logits at every step of every sequence in a mixed-length batch equal a full forward over prompt + output,
    whether prompts are prefilled at once or a few tokens per step between the others' decode steps. In int4
    (fused projections, bfloat16 activations and KV cache, core.quant) within bfloat16's rounding."""
    llm = make_llm(request.getfixturevalue("tiny" if representation == "float32" else "tiny_int4"),
                   prefill_chunk=prefill_chunk)
    tolerance = 1e-4 if representation == "float32" else None  # int4: a share of the logits' scale, below
    recorded = {prompt: [] for prompt in PROMPTS}

    def recorder(prompt):
        return lambda ids, logits: recorded[prompt].append(logits.clone()) or logits

    first = llm.stream(PROMPTS[0], max_new_tokens=10, logit_bias=NO_STOP, logits_processor=recorder(PROMPTS[0]))
    reading = iter(first)
    next(reading)  # decoding now: the other prompts go in prefill_chunk tokens per step, between its steps
    streams = [first] + [llm.stream(p, max_new_tokens=10, logit_bias=NO_STOP, logits_processor=recorder(p))
                         for p in PROMPTS[1:]]
    "".join(reading)
    for stream in streams[1:]:
        "".join(stream)
    for prompt, stream in zip(PROMPTS, streams, strict=True):
        ids = stream.prompt_ids + stream.generated
        with torch.no_grad():
            full = llm.model(torch.tensor([ids]), torch.arange(len(ids)))[0]  # (T, vocab)
        steps = torch.stack(recorded[prompt])  # (10, vocab)
        assert len(steps) == 10 == len(stream.generated)
        bound = tolerance or 0.05 * full.abs().max().item()
        assert (steps - full[len(stream.prompt_ids) - 1: -1]).abs().max().item() < bound, prompt


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


def test_the_kv_cache_grows_once_for_a_burst_in_whole_blocks_of_what_it_holds(tiny, monkeypatch):
    """Requests arriving together get their rows in one allocation, with slots for the longest prompt rounded up to
    a block (not doubled); decoding past them adds one block; an idle engine gives the cache back."""
    monkeypatch.setattr(engine_module, "SLOT_BLOCK", 8)
    shapes = []  # (rows, slots) of every cache the engine allocates
    allocate = KVCache.allocate.__func__

    def recording(cls, config, rows, slots, *args, **kwargs):
        shapes.append((rows, slots))
        return allocate(cls, config, rows, slots, *args, **kwargs)

    monkeypatch.setattr(KVCache, "allocate", classmethod(recording))
    llm = make_llm(tiny, max_batch=4)
    params = SamplingParams(max_new_tokens=10, logit_bias=NO_STOP)
    streams = [llm.engine.submit(list(range(3, 3 + n)), params) for n in (5, 20, 10)]
    outputs = ["".join(stream) for stream in streams]
    assert shapes == [(3, 24), (3, 32)]  # 21 positions in 3 blocks, then 30 (20 + 10) in 4
    assert llm.engine.cache is None
    shapes.clear()
    assert ["".join(llm.engine.submit(list(range(3, 3 + n)), params)) for n in (5, 20, 10)] == outputs
    assert shapes == [(1, 8), (1, 16), (1, 24), (1, 32), (1, 16), (1, 24)]  # one at a time: a cache each, grown


@pytest.mark.skipif(not engine_module._glibc(), reason="glibc's malloc tuning")
def test_a_freed_kv_cache_sized_block_goes_back_to_the_system():
    """Blocks of MMAP_THRESHOLD and more are mapped on their own: freeing one lowers the process's memory, even
    after glibc's own policy would have moved blocks of that size onto the heap (where a free keeps them)."""
    engine_module.release_large_blocks()

    def anonymous_bytes() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:")) * 1024

    before = anonymous_bytes()
    for _ in range(3):
        block = torch.ones(4 * engine_module.MMAP_THRESHOLD // 4)  # written, so resident
        del block
        small = [torch.ones(1000) for _ in range(100)]  # heap blocks that would sit above it
    assert small and anonymous_bytes() - before < engine_module.MMAP_THRESHOLD


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


def test_chunked_prefill_gives_the_output_of_a_whole_one(tiny):
    long_prompt = "Pack my box with five dozen liquor jugs! " * 4
    whole = make_llm(tiny, prefix_cache_bytes=0).generate_batch([*PROMPTS, long_prompt], max_new_tokens=12,
                                                                 logit_bias=NO_STOP)
    llm = make_llm(tiny, prefill_chunk=7)
    running = iter(llm.stream(PROMPTS[0], max_new_tokens=40, logit_bias=NO_STOP))
    next(running)  # while it decodes, the batch's prompts go in 7 tokens per step
    chunked = llm.generate_batch([*PROMPTS, long_prompt], max_new_tokens=12, logit_bias=NO_STOP)
    "".join(running)
    assert chunked == whole


def test_a_prompt_alone_is_prefilled_in_solo_chunks(tiny, monkeypatch):
    """Nobody waits between chunks, so a prompt with no sequence decoding goes in SOLO_PREFILL tokens at a time
    (and, in int4, unpacks the weights once for all of them)."""
    monkeypatch.setattr(engine_module, "SOLO_PREFILL", 16)
    llm = make_llm(tiny, prefill_chunk=4)
    fed = []  # tokens per forward pass
    forward = llm.model.forward
    monkeypatch.setattr(llm.model, "forward", lambda tokens, *args, **kwargs: fed.append(tokens.shape[1])
                        or forward(tokens, *args, **kwargs))
    stream = llm.stream("lazy dog. " * 8, max_new_tokens=3, logit_bias=NO_STOP)
    "".join(stream)
    n = stream.prompt_tokens
    assert n > 32
    assert fed == [16] * (n // 16) + [n % 16] * (n % 16 > 0) + [1, 1]


def test_a_running_stream_gets_a_token_at_every_chunk_of_a_long_prefill(tiny):
    llm = make_llm(tiny, prefill_chunk=8)
    long = []  # the long request, once submitted
    seen = []  # how much of its prompt was in when the running stream got each token

    def watch(ids, logits):
        seen.append(long[0].position if long else 0)
        return logits

    running = iter(llm.stream(PROMPTS[0], max_new_tokens=60, logit_bias=NO_STOP, logits_processor=watch))
    next(running)
    long.append(llm.stream("lazy dog. " * 8, max_new_tokens=1))
    n = long[0].prompt_tokens
    assert n > 40
    for _ in running:
        pass
    assert [p for p in seen if 0 < p < n] == list(range(8, n, 8))  # one chunk per step, a token at each


def read(stream):
    """The stream's text, or the exception it raised."""
    try:
        return "".join(stream)
    except Exception as error:
        return error


def test_a_tiny_temperature_is_greedy_and_spares_its_neighbour(tiny):
    """temperature=6e-38 overflows float32 logits / temperature: it samples greedily instead."""
    greedy = make_llm(tiny).generate_batch(PROMPTS[:2], max_new_tokens=20, logit_bias=NO_STOP)
    llm = make_llm(tiny)
    normal = llm.stream(PROMPTS[0], max_new_tokens=20, logit_bias=NO_STOP, temperature=0.7, seed=1)
    for temperature in (6e-38, 1e-40):
        cold = llm.stream(PROMPTS[1], max_new_tokens=20, logit_bias=NO_STOP, temperature=temperature)
        assert read(cold) == greedy[1]
    assert read(normal) == make_llm(tiny).generate(PROMPTS[0], max_new_tokens=20, logit_bias=NO_STOP,
                                                   temperature=0.7, seed=1)
    assert normal.finish_reason == "length"


def failing_at(call, make_error):
    """A logits processor that fails on its `call`-th call (a decode step, past the prefill)."""
    calls = []

    def processor(ids, logits):
        calls.append(1)
        if len(calls) == call:
            return make_error(logits)
        return logits
    return processor


def raise_error(logits):
    raise RuntimeError("processor failed")


@pytest.mark.parametrize(("make_error", "error"), [
    (raise_error, RuntimeError("processor failed")),
    (lambda logits: torch.full_like(logits, math.nan), ModelRequestError("no token can be chosen")),
])
def test_an_error_in_one_sequence_ends_it_alone(tiny, make_error, error):
    """A processor that raises, or leaves no token to choose, mid-generation: its reader gets the error, and the
    sequences decoded in the same steps finish as if it had never been there."""
    alone = make_llm(tiny).generate_batch(PROMPTS[1:], max_new_tokens=12, logit_bias=NO_STOP)
    llm = make_llm(tiny)
    broken = llm.stream(PROMPTS[0], max_new_tokens=12, logit_bias=NO_STOP, logits_processor=failing_at(3, make_error))
    others = [llm.stream(p, max_new_tokens=12, logit_bias=NO_STOP) for p in PROMPTS[1:]]
    assert [read(s) for s in others] == alone
    failure = read(broken)
    assert type(failure) is type(error) and str(error) in str(failure)
    assert broken.finish_reason == "error" and broken.completion_tokens == 2
    assert llm.generate(PROMPTS[0], max_new_tokens=3, logit_bias=NO_STOP)  # the engine goes on


def test_nan_logits_from_a_processor_are_never_chosen(tiny):
    llm = make_llm(tiny)
    greedy = llm.stream(PROMPTS[0], max_new_tokens=12, logit_bias=NO_STOP)
    "".join(greedy)

    def poison_the_best(ids, logits):
        logits = logits.clone()
        logits[logits.argmax()] = math.nan
        return logits

    stream = llm.stream(PROMPTS[0], max_new_tokens=12, logit_bias=NO_STOP, logits_processor=poison_the_best)
    "".join(stream)
    assert stream.finish_reason == "length"
    assert stream.generated[0] != greedy.generated[0]


def test_logit_bias_outside_the_vocabulary_is_refused(tiny):
    llm = make_llm(tiny)
    with pytest.raises(ModelRequestError, match="logit_bias .* vocabulary"):
        llm.generate("fox", max_new_tokens=1, logit_bias={llm.model.config.vocab_size: 1.0})


def test_stop_strings_do_not_slow_other_streams(tiny):
    """Two neighbours with the most and longest stop strings allowed: the other stream's token gap stays within
    1.5x of its gap alone (it was 2x). Gaps are CPU time of the reading thread (it runs the engine's steps), with
    torch on that one thread, so other processes on the machine do not blur them; the median of five rounds."""
    llm = make_llm(tiny)
    stop = [chr(0x2603) + chr(0x4E00 + i) * (MAX_STOP_CHARS - 1) for i in range(MAX_STOP_STRINGS)]

    def median_gap(neighbours: int) -> float:
        times = []
        stream = llm.stream(PROMPTS[0], max_new_tokens=64, logit_bias=NO_STOP,
                            logits_processor=lambda ids, logits: times.append(time.thread_time()) or logits)
        others = [llm.stream(PROMPTS[1], max_new_tokens=64, logit_bias=NO_STOP, stop=stop) for _ in range(neighbours)]
        "".join(stream)
        for other in others:
            other.cancel()
        return statistics.median(b - a for a, b in itertools.pairwise(times))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ratios = [median_gap(2) / median_gap(0) for _ in range(5)]
    finally:
        torch.set_num_threads(threads)
    assert statistics.median(ratios) < 1.5, ratios
