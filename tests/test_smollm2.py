"""The embedded SmolLM2 GGUF: our model and tokenizer equal `transformers` reading the same file.

Slow: transformers needs ~20 s to load this GGUF; both readers are loaded once for the module.
"""

import pytest
import torch

from core import LLM
from core.loading import load_model

pytestmark = pytest.mark.slow

TEXTS = [
    "Hello, world!",
    "  leading spaces and trailing   ",
    "tabs\tand\nnewlines\r\n\n\nruns      of spaces",
    "Ünïcödé: naïve café, Straße, ĳ, Æsir — “quotes” … ½ ∑ ∞",
    "中文、日本語のテキスト、한국어 텍스트",
    "emoji 🤖🎉👍🏽 and flags 🇫🇷 and ZWJ 👩‍👩‍👧",
    "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # O(2^n)\n",
    '{"json": [1, 2.5e-3, null, true], "key": "value"}',
    "<|im_start|>user\nspecial tokens inline<|im_end|>\n<|endoftext|>",
    "numbers 1234567890 3.14159 1,000,000 0x1F",
    "",
]
CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a joke about 🐍 Python."}],
]
PROMPTS = ["The capital of France is", "def add(a, b):", "Once upon a time, in a small village,"]


@pytest.fixture(scope="module")
def ours(smollm2_path):
    model, tokenizer, _ = load_model(str(smollm2_path), dtype="float32")
    return model, tokenizer


@pytest.fixture(scope="module")
def reference(smollm2_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = smollm2_path.parent, smollm2_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).eval(), tokenizer


def test_config_read_from_metadata(ours):
    config = ours[0].config
    assert (config.n_layers, config.dim, config.n_heads, config.n_kv_heads, config.ffn_dim) == (30, 576, 9, 3, 1536)
    assert (config.rope_theta, config.vocab_size, config.tie_embeddings) == (100000.0, 49152, True)


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_matches_transformers(ours, reference, text):
    tokenizer, ref = ours[1], reference[1]
    ids = tokenizer.encode(text)
    assert ids == ref(text).input_ids
    assert tokenizer.decode(ids) == ref.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_apply_chat_template(ours, reference, messages, add_generation_prompt):
    expected = reference[1].apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours[1].apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == expected


def test_logits_match_transformers(ours, reference):
    for prompt in [*PROMPTS, ours[1].apply_chat_template(CONVERSATIONS[2])]:
        ids = torch.tensor([ours[1].encode(prompt)])
        with torch.no_grad():
            diff = (ours[0](ids, torch.arange(ids.shape[1])) - reference[0](ids).logits).abs().max().item()
        assert diff < 1e-3, prompt


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_continuation_matches_transformers_generate(ours, reference, prompt):
    model, tokenizer = ours
    ids = tokenizer.encode(prompt)
    expected = reference[0].generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False,
                                     eos_token_id=tokenizer.stop_ids)[0, len(ids):].tolist()
    stream = LLM(model, tokenizer).stream(prompt, max_new_tokens=24)
    "".join(stream)
    assert stream.generated == [t for t in expected if t not in tokenizer.stop_ids]
