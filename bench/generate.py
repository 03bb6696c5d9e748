"""Generation speed: llmkit beside transformers.generate, same GGUF weights, same prompts, greedy.

Each side runs in its own process (so peak RSS and cold start are its own), in rounds: every side once per
round, in turn, medians over the rounds (this machine's speed drifts during a run). Figures: decode tokens/s
at batch 1 (32-token prompt, 128 new tokens, as 127 / (t(128 new) - t(1 new))) and after a 1,200-token
prompt (64 new tokens, likewise; a PDF chat answer's case), total tokens/s at
batch 8, prefill of a 1,024-token prompt, time to first token on a 1,000-token shared prefix without
and with a prefix-cache hit (ours only), cold start (process start to first token), peak RSS.
Greedy tokens of the batch-1 run are compared across sides.
Sides: ours as `LLM.load()` gives it (dtype "auto": int4 for this file, core.quant), in float32 (exact) and
bfloat16 (float16 with --sides); transformers in float32 and bfloat16; llama.cpp
(llama-cpp-python on the same GGUF, its own quantised kernels) when it is installed. It is not a
dependency; on this machine its default native build dies with SIGILL, so build it with
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON
  -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  .venv/bin/pip install llama-cpp-python
Run: .venv/bin/python -m bench.generate [--repeats 3] [--sides ours,ours-float32,ours-fp16,transformers,llama.cpp]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from bench import results

WORDS = ["the", "river", "city", "market", "winter", "light", "engine", "story", "garden", "music", "paper",
         "stone", "window", "north", "history", "science", "table", "voice", "morning", "letter"]


def text_of(n_words: int, seed: int) -> str:
    return " ".join(WORDS[(i * 7 + seed * 13) % len(WORDS)] for i in range(n_words))


def prompts(tokenizer_encode, n_tokens: int, count: int, seed: int = 0) -> list[list[int]]:
    """`count` different prompts of exactly n_tokens tokens."""
    return [tokenizer_encode(text_of(2 * n_tokens, seed + i))[:n_tokens] for i in range(count)]


DTYPES = {"ours": "auto", "ours-float32": "float32", "ours-bf16": "bfloat16", "transformers": "float32",
          "transformers-bf16": "bfloat16", "llama.cpp": "gguf", "ours-fp16": "float16"}
DEFAULT_SIDES = ("ours", "ours-float32", "ours-bf16", "transformers", "transformers-bf16", "llama.cpp")


class Ours:
    def __init__(self, model: str | None, dtype: str):
        from core import LLM, EngineConfig

        self.llm = LLM.load(model, engine=EngineConfig(max_batch=8, max_seq_len=2048), dtype=dtype)
        self.no_eos = {i: -float("inf") for i in self.llm.tokenizer.stop_ids}
        self.encode = self.llm.tokenizer.encode

    def generate(self, batch: list[list[int]], new_tokens: int) -> list[list[int]]:
        from core import SamplingParams

        params = SamplingParams(max_new_tokens=new_tokens, logit_bias=self.no_eos)
        streams = [self.llm.engine.submit(ids, params) for ids in batch]
        for stream in streams:
            "".join(stream)
        return [s.generated for s in streams]

    def clear_prefix_cache(self):
        self.llm.engine.prefix_cache = type(self.llm.engine.prefix_cache)(self.llm.engine.prefix_cache.budget_bytes)


class Transformers:
    def __init__(self, model: str | None, dtype: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from core.resolve import resolve_model

        path = resolve_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        self.model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                          dtype=getattr(torch, dtype)).eval()
        self.encode = lambda text: self.tokenizer(text).input_ids
        self.torch = torch

    def generate(self, batch: list[list[int]], new_tokens: int) -> list[list[int]]:
        torch = self.torch
        width = max(map(len, batch))
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(b)) + b for b in batch])  # left padding
        mask = torch.tensor([[0] * (width - len(b)) + [1] * len(b) for b in batch])
        with torch.inference_mode():
            out = self.model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens,
                                      min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad)
        return out[:, width:].tolist()

    def clear_prefix_cache(self):
        pass


class LlamaCpp:
    """llama-cpp-python has no batched generation: a batch runs its sequences one after another."""

    def __init__(self, model: str | None, dtype: str):
        from llama_cpp import Llama

        from core.resolve import resolve_model

        self.llm = Llama(model_path=str(resolve_model(model)), n_ctx=2048, n_threads=os.cpu_count(), verbose=False)
        self.encode = lambda text: self.llm.tokenize(text.encode(), add_bos=False, special=True)
        eos = self.llm.token_eos()

        def no_eos(ids, scores):
            scores[eos] = -float("inf")
            return scores

        self.no_eos = no_eos

    def generate(self, batch: list[list[int]], new_tokens: int) -> list[list[int]]:
        outputs = []
        for ids in batch:
            self.llm.reset()  # otherwise it silently reuses the previous prompt's cache
            tokens = []
            for token in self.llm.generate(ids, top_k=1, temp=0.0, reset=True, logits_processor=[self.no_eos]):
                tokens.append(token)
                if len(tokens) == new_tokens:
                    break
            outputs.append(tokens)
        return outputs

    def clear_prefix_cache(self):
        pass


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def measure(side: str, model: str | None, repeats: int) -> dict:
    kind = Ours if side.startswith("ours") else LlamaCpp if side == "llama.cpp" else Transformers
    runner = kind(model, DTYPES[side])
    short = prompts(runner.encode, 32, 8)
    long_prompt = prompts(runner.encode, 1024, 1, seed=5)[0]
    shared = prompts(runner.encode, 1000, 1, seed=9)[0]
    context = prompts(runner.encode, 1200, 1, seed=3)[0]  # as long as a PDF chat prompt with its passages
    runner.generate([short[0]], 4)  # warm-up
    one, full, batch8, prefill, cold_ttft, warm_ttft, context_one, context_full = [], [], [], [], [], [], [], []
    for _ in range(repeats):
        runner.clear_prefix_cache()
        one.append(timed(runner.generate, [short[0]], 1)[0])
        runner.clear_prefix_cache()  # both runs prefill: a prefix-cache hit would leave the prefill out of this one
        seconds, tokens = timed(runner.generate, [short[0]], 128)
        full.append(seconds)
        batch8.append(timed(runner.generate, short, 128)[0])
        prefill.append(timed(runner.generate, [long_prompt], 1)[0])
        runner.clear_prefix_cache()
        cold_ttft.append(timed(runner.generate, [shared + short[1][:24]], 1)[0])
        warm_ttft.append(timed(runner.generate, [shared + short[2][:24]], 1)[0])
        runner.clear_prefix_cache()
        context_one.append(timed(runner.generate, [context], 1)[0])
        runner.clear_prefix_cache()
        context_full.append(timed(runner.generate, [context], 64)[0])
    med = statistics.median
    return {
        "decode_tok_s_batch1": 127 / (med(full) - med(one)),
        "decode_tok_s_after_1200": 63 / (med(context_full) - med(context_one)),
        "total_tok_s_batch8": 8 * 128 / med(batch8),
        "prefill_1024_s": med(prefill),
        "ttft_1000_prefix_miss_s": med(cold_ttft),
        "ttft_1000_prefix_hit_s": med(warm_ttft),
        "greedy_tokens": tokens[0],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


COLD = {
    "ours": "from core import LLM\nllm = LLM.load({model!r}, dtype={dtype!r})\n"
            "next(iter(llm.stream('Hello', max_new_tokens=1)))",
    "transformers": ("from transformers import AutoModelForCausalLM, AutoTokenizer\n"
                     "from core.resolve import resolve_model\n"
                     "p = resolve_model({model!r}); t = AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name)\n"
                     "m = AutoModelForCausalLM.from_pretrained(p.parent, gguf_file=p.name, dtype={dtype!r})\n"
                     "m.generate(**t('Hello', return_tensors='pt'), max_new_tokens=1)"),
    "llama.cpp": ("from llama_cpp import Llama\nfrom core.resolve import resolve_model\n"
                  "llm = Llama(model_path=str(resolve_model({model!r})), n_ctx=2048, verbose=False)\n"
                  "llm.create_completion('Hello', max_tokens=1)"),
}


def cold_start(side: str, model: str | None) -> float:
    """Seconds from process start to its first generated token (the converted-GGUF cache is warm)."""
    kind = "ours" if side.startswith("ours") else side if side == "llama.cpp" else "transformers"
    code = COLD[kind].format(model=model, dtype=DTYPES[side])
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


ROWS = [("decode tok/s, batch 1", "decode_tok_s_batch1", True),
        ("decode tok/s after a 1,200-token prompt", "decode_tok_s_after_1200", True),
        ("total tok/s, batch 8", "total_tok_s_batch8", True),
        ("prefill 1,024 tokens, s", "prefill_1024_s", False),
        ("TTFT, 1,000-token prefix, cache miss, s", "ttft_1000_prefix_miss_s", False),
        ("TTFT, 1,000-token prefix, cache hit, s", "ttft_1000_prefix_hit_s", False),
        ("cold start to first token, s", "cold_start_s", False), ("peak RSS, MB", "peak_rss_mb", False)]


def tables(results: dict) -> str:
    """The figures side by side, then each of our sides as a ratio (>1 is better for us) to each reference."""
    sides = list(results)
    lines = ["| | " + " | ".join(sides) + " |", "|---" * (len(sides) + 1) + "|"]
    for label, key, _ in ROWS:
        lines.append(f"| {label} | " + " | ".join(f"{results[s][key]:.2f}" for s in sides) + " |")
    for side in sides:
        r = results[side]
        r["batch8_over_batch1"] = r["total_tok_s_batch8"] / r["decode_tok_s_batch1"]
        r["prefix_hit_speedup"] = r["ttft_1000_prefix_miss_s"] / r["ttft_1000_prefix_hit_s"]
    lines.append("| batch-8 total / batch-1 decode | " + " | ".join(
        f"{results[s]['batch8_over_batch1']:.2f}x" for s in sides) + " |")
    lines.append("| TTFT speed-up from a prefix-cache hit | " + " | ".join(
        f"{results[s]['prefix_hit_speedup']:.2f}x" for s in sides) + " |")
    ours = [s for s in sides if s.startswith("ours")]
    references = [s for s in sides if not s.startswith("ours")]
    if not (ours and references):
        return "\n".join(lines)
    pairs = [(o, r) for o in ours for r in references]
    lines += ["", "Ratios, ours / reference (speed: >1 means we are faster; RSS: >1 means we use more):", "",
              "| | " + " | ".join(f"{o} vs {r}" for o, r in pairs) + " |", "|---" * (len(pairs) + 1) + "|"]
    for label, key, higher_better in ROWS:
        cells = []
        for o, r in pairs:
            ratio = results[o][key] / results[r][key]
            cells.append(f"{ratio if higher_better or key == 'peak_rss_mb' else 1 / ratio:.2f}x")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = results.parser("generate", __doc__)
    parser.add_argument("--model", help="a .gguf file (default: the embedded SmolLM2)")
    parser.add_argument("--repeats", type=int, default=3)
    has_llama_cpp = importlib.util.find_spec("llama_cpp") is not None
    parser.add_argument("--sides", default=",".join(s for s in DEFAULT_SIDES if s != "llama.cpp" or has_llama_cpp))
    parser.add_argument("--side", help=argparse.SUPPRESS)  # internal: measure one side in this process
    args = parser.parse_args()
    if args.side:
        print(json.dumps(measure(args.side, args.model, args.repeats)))
        return
    # Rounds: every side once per round, each in its own process, in turn. This shared machine's speed drifts by
    # 10-20% over a run; sides measured one after another would each get a different machine.
    sides = args.sides.split(",")
    runs = {side: [] for side in sides}
    for _ in range(args.repeats):
        for side in sides:
            command = [sys.executable, "-m", "bench.generate", "--side", side, "--repeats", "1"]
            if args.model:
                command += ["--model", args.model]
            out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=results.ROOT)
            run = json.loads(out.stdout.strip().splitlines()[-1])
            run["cold_start_s"] = cold_start(side, args.model)
            runs[side].append(run)
            print(side, {k: v for k, v in run.items() if k != "greedy_tokens"}, file=sys.stderr)
    figures = {side: {key: statistics.median(run[key] for run in side_runs) for key in side_runs[0]
                      if key != "greedy_tokens"} | {"greedy_tokens": side_runs[0]["greedy_tokens"]}
               for side, side_runs in runs.items()}
    tokens = {side: r.pop("greedy_tokens") for side, r in figures.items()}
    reference = "ours-float32" if "ours-float32" in tokens else next(iter(tokens))
    splits = divergences(args.model, tokens, reference)
    same = {side: splits[side] is None for side in tokens}
    shown = "; ".join(f"{side}: at token {d['step']}, {reference} {d['reference']} vs {d['other']}"
                      for side, d in splits.items() if d is not None) or "none"
    body = (f"Torch threads default. Median of {args.repeats} rounds; a round runs every side once, each in its own "
            f"process, one after another.\n\n{tables(figures)}\n\n"
            f"Greedy batch-1 tokens (128, EOS suppressed) identical to {reference}'s: {same}\n\n"
            f"First divergences (token id, its probability under float32): {shown}")
    results.write("generate", f"Generation: {args.model or 'embedded SmolLM2-135M-Instruct Q4_1 GGUF'}", body,
                  {"results": figures, "greedy_identical": same, "divergences": splits}, args.results)


def divergences(model: str | None, tokens: dict[str, list[int]], reference: str) -> dict[str, dict | None]:
    """Per side, None when its greedy tokens equal the reference's; else the first step where they differ, with
    both tokens' probabilities under our float32 model there (a near-tie, or a real error?)."""
    import torch

    from core import LLM

    exact = LLM.load(model, dtype="float32")
    prompt = prompts(exact.tokenizer.encode, 32, 8)[0]
    found = {}
    for side, ids in tokens.items():
        step = next((i for i, (a, b) in enumerate(zip(tokens[reference], ids, strict=False)) if a != b), None)
        if step is None:
            found[side] = None
            continue
        context = torch.tensor([prompt + tokens[reference][:step]])
        with torch.inference_mode():
            probs = torch.softmax(exact.model(context, torch.arange(context.shape[1]))[0, -1], -1)
        theirs, ours = tokens[reference][step], ids[step]
        found[side] = {"step": step, "reference": [theirs, round(float(probs[theirs]), 3)],
                       "other": [ours, round(float(probs[ours]), 3)]}
    return found


if __name__ == "__main__":
    main()
