"""LLM: the small public API the rest of llmkit and users call to load a model and generate text.

A string is a raw prompt; a list of {"role", "content"} messages goes through the chat template.
Special-token text (`<|im_start|>`) in a raw prompt is read as control tokens: the caller writes the
markup. In messages it is plain text: only the template's own markup makes control tokens, so a
message (a user's, a retrieved document's, an email's) cannot forge a turn (Tokenizer.encode_chat).
Sampling options are the fields of core.sampling.SamplingParams; `json_schema`, `choices` or `regex`
constrain the output. Every call goes through one continuous-batching Engine, so calls from many
threads share decode steps.

LLM implements core.chat.ChatModel, with its errors: ModelRequestError for a bad option, prompt or
constraint, ContextLengthError for a prompt (plus max_new_tokens) over the context. Token ids are
LLM's own: `prompt_ids` gives them, and a list of ints is a prompt here, not for other chat models.

Importing this module freezes the objects alive then (gc.freeze): torch's modules, classes and functions, several
hundred thousand objects that live as long as the process. Python's cyclic garbage collector otherwise walks them
all in every full collection, one during `LLM.load` and two at the interpreter's exit: about 0.5 s of a 2.0 s cold
start (process start to first token and exit, as bench/generate.py times it). What was alive then is never collected
as a cycle (only cyclic garbage among it would stay; reference counting still frees the rest).
"""

from __future__ import annotations

import gc
from pathlib import Path

from core.engine import Engine, EngineConfig, GenerationStream
from core.errors import ContextLengthError, ModelRequestError
from core.loading import load_model
from core.model import Transformer
from core.sampling import SamplingParams
from core.tokenizer import Tokenizer

Prompt = str | list[dict] | list[int]  # raw text, chat messages, or token ids

gc.freeze()  # see the module's doc


class LLM:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, source: Path | str = "in-memory",
                 engine: EngineConfig | None = None, name: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.source = source  # the file or directory the weights came from
        self.name = name or Path(str(source)).stem  # what users and API clients call this model
        self.engine = Engine(model, tokenizer, engine)

    @classmethod
    def load(cls, name: str | None = None, engine: EngineConfig | None = None, dtype: str = "auto") -> LLM:
        """The embedded SmolLM2 by default; else a .gguf path, a checkpoint directory or a HF model id.

        dtype "auto" is the fastest representation that keeps the file's weights: "int4" (4-bit layers,
        bfloat16 activations: core.quant) for a Q4_0 / Q4_1 GGUF on a CPU with bfloat16 instructions, else
        "float32", which computes what transformers computes. "bfloat16" and "float16" trade a little
        accuracy for speed. bench/results/generate.md and accuracy.md have the figures of each.
        """
        model, tokenizer, path = load_model(name, dtype)
        is_model_id = name is not None and not Path(name).expanduser().exists()
        return cls(model, tokenizer, path, engine, name=name if is_model_id else None)

    @property
    def context_length(self) -> int:
        """Tokens of prompt and output together that one sequence may hold."""
        return self.engine.max_seq_len

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """The token ids the model is given for `prompt`: a chat prompt as the chat template renders it."""
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt)
        if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            if prompt and not all(0 <= t < self.model.config.vocab_size for t in prompt):
                raise ModelRequestError(f"token ids must lie in [0, {self.model.config.vocab_size})")
            return list(prompt)
        if not isinstance(prompt, list):
            raise ModelRequestError(f"a prompt is a string, a list of messages or token ids, got "
                                    f"{type(prompt).__name__}")
        try:
            return self.tokenizer.encode_chat(prompt)
        except ValueError as error:  # a message without role or content, no template, a template that failed
            raise ModelRequestError(str(error)) from None

    def count_tokens(self, prompt: Prompt) -> int:
        """Exactly the tokens `stream(prompt)` gives the model."""
        return len(self.prompt_ids(prompt))

    def stream(self, prompt: Prompt, *, json_schema=None, choices=None, regex=None, **sampling) -> GenerationStream:
        """Text deltas of the continuation (iterate it); afterwards it holds finish_reason and token counts.

        `sampling`: max_new_tokens, temperature (0 = greedy), top_k, top_p, min_p, repetition_penalty,
        logit_bias, stop, seed, logits_processor (see SamplingParams).

        With `json_schema`, `choices` or `regex` and max_new_tokens, the output always matches: it is closed
        in time (GenerationStream.closed_early), and a budget too small for the shortest match raises
        ModelRequestError here, before any token.
        """
        params = SamplingParams(**sampling)
        constraint = None
        if json_schema is not None or choices is not None or regex is not None:
            from core.constrain import TokenConstraint

            try:
                compiled = TokenConstraint.compile(self.tokenizer, json_schema=json_schema, choices=choices,
                                                   regex=regex)
            except ValueError as error:  # an invalid schema or regex, empty choices, two constraints at once
                raise ModelRequestError(str(error)) from None
            constraint = compiled.start()
        return self.engine.submit(self.prompt_ids(prompt), params, constraint)

    def generate(self, prompt: Prompt, **options) -> str:
        return "".join(self.stream(prompt, **options))

    def generate_batch(self, prompts: list[Prompt], **options) -> list[str]:
        """All prompts submitted at once, so they decode together; outputs in prompt order."""
        streams = [self.stream(prompt, **options) for prompt in prompts]
        return ["".join(stream) for stream in streams]

    def score(self, prompt: Prompt, continuations: list[str]) -> list[float]:
        """The summed log-probability of each continuation's tokens right after `prompt`, in that order.

        For choosing among a few given answers by what the model itself prefers (agents.routing scores
        `{"tool": "<name>"` per tool). The prompt and the continuations' common leading tokens are run once
        (the prompt's cached prefix reused, as a generation would), the rest of each continuation after it
        in one batch. A continuation is tokenized on its own, so it should start where a reply starts.
        Runs under the engine's lock: generations wait meanwhile.
        """
        import torch

        from core.kv_cache import KVCache

        if not continuations or not all(isinstance(c, str) and c for c in continuations):
            raise ModelRequestError("give at least one continuation, each a non-empty string")
        ids = self.prompt_ids(prompt)
        tails = [self.tokenizer.encode(c, add_special_tokens=False, parse_special=False) for c in continuations]
        if not ids or len(ids) + max(len(tail) for tail in tails) > self.context_length:
            raise ContextLengthError(f"the prompt has {len(ids)} tokens, and with the longest continuation it "
                                     f"passes the context of {self.context_length}")
        shared = 0  # leading tokens every continuation has, leaving each at least one of its own
        while shared < min(len(tail) for tail in tails) - 1 and len({tail[shared] for tail in tails}) == 1:
            shared += 1
        head, rests = ids + tails[0][:shared], [tail[shared:] for tail in tails]
        engine, n, width = self.engine, len(head), max(len(rest) for rest in rests)
        with torch.inference_mode(), engine._lock:
            one = KVCache.allocate(self.model.config, 1, n, engine.dtype, written=True)  # reused + run
            reused, k, v = engine.prefix_cache.lookup(ids)
            if reused:
                one.k[:, 0, :, :reused], one.v[:, 0, :, :reused] = k[:, :, :reused], v[:, :, :reused]
            first = self.model(torch.tensor([head[reused:]]), torch.arange(reused, n)[None], kv_cache=one,
                               logits_to_keep=shared + 1)[0]  # (shared + 1, vocab): from the prompt's last token
            engine.prefix_cache.insert(ids, one.k[:, 0, :, :len(ids)], one.v[:, 0, :, :len(ids)])
            batch = KVCache.allocate(self.model.config, len(rests), n + width, engine.dtype, written=True)
            batch.k[:, :, :, :n], batch.v[:, :, :, :n] = one.k, one.v  # broadcast over the rows
            tokens = torch.tensor([rest + [0] * (width - len(rest)) for rest in rests])  # padding after: never read
            logits = self.model(tokens, torch.arange(n, n + width)[None].expand_as(tokens), kv_cache=batch)
        first = torch.log_softmax(first, -1)
        common = float(first[torch.arange(shared), torch.tensor(tails[0][:shared], dtype=torch.long)].sum())
        # Row r's token j + 1 is scored by its logits at j: gathered in one op, padding masked out.
        following = torch.tensor([rest[1:] + [0] * (width - len(rest)) for rest in rests],
                                 dtype=torch.long).view(len(rests), width - 1)  # (rows, width - 1): empty at width 1
        picked = torch.log_softmax(logits[:, :-1], -1).gather(-1, following[..., None])[..., 0]
        real = torch.arange(width - 1)[None] < torch.tensor([len(rest) - 1 for rest in rests])[:, None]
        totals = first[shared, torch.tensor([rest[0] for rest in rests])] + (picked * real).sum(-1)
        return [common + float(total) for total in totals]
