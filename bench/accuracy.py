"""What each representation costs in accuracy: its next-token distributions against float32 on the same weights.

For every position of a fixed text set (TEXTS, 7 texts, ~500 tokens), the mean KL divergence per token
KL(float32 || representation) and how often the top-1 token agrees; the largest |logit difference|;
and, per text, whether 32 greedy tokens stay identical, else the first divergence with both tokens'
float32 probabilities. tests/test_quant.py asserts BOUNDS on the first two.
Run: .venv/bin/python -m bench.accuracy [--model PATH]
"""

from __future__ import annotations

import contextlib

import torch

from bench import results
from core import LLM, quant

TEXTS = [
    "The capital of France is Paris, which sits on the Seine and has been the country's political centre since "
    "the Middle Ages.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "Once upon a time, in a land far away, a shepherd found a silver key under a stone by the river. He kept it "
    "for seven years before he found the door it opened.",
    "The three laws of thermodynamics state that energy is conserved, that entropy of an isolated system never "
    "decreases, and that entropy approaches a constant as temperature approaches absolute zero.",
    "Photosynthesis converts light energy into chemical energy: chlorophyll absorbs red and blue light, water is "
    "split, oxygen is released, and carbon dioxide is fixed into sugars in the Calvin cycle.",
    "Quarterly revenue rose 12% to $4.2 billion, beating analysts' estimates, while operating margin narrowed to "
    "18.5% on higher freight costs. The company raised its full-year guidance.",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n2 + 2 = 4.<|im_end|>\n",
]
# What tests/test_quant.py holds each representation to, on TEXTS with the embedded SmolLM2 (measured figures
# in bench/results/accuracy.md; the bounds leave room for other CPUs' rounding, not for a broken kernel).
BOUNDS = {"float16": {"top1": 0.99, "mean_kl": 0.0002}, "bfloat16": {"top1": 0.97, "mean_kl": 0.005},
          "int4": {"top1": 0.97, "mean_kl": 0.005}, "int4-prefill": {"top1": 0.97, "mean_kl": 0.005},
          "int4-decode": {"top1": 0.97, "mean_kl": 0.005}}
REPRESENTATIONS = ("int4", "int4-prefill", "int4-decode", "float16", "bfloat16")


@contextlib.contextmanager
def loaded(name: str, model: str | None = None):
    """The LLM in representation `name`. "int4-prefill" is int4 with every product through the weights unpacked
    to bfloat16 (core.quant.unpack_int4), the path that prompts of quant.UNPACKED_ROWS tokens or more take;
    "int4-decode" is int4 with every output product through core.cpu_kernels' int8 kernel, as a decode step's
    (plain "int4" takes the bfloat16 copy for a whole text's rows)."""
    rows = quant.UNPACKED_ROWS, quant.BFLOAT16_ROWS, quant.INT8_ROWS
    if name == "int4-prefill":
        quant.UNPACKED_ROWS = quant.BFLOAT16_ROWS = 1
    if name == "int4-decode":
        quant.INT8_ROWS = 10**9
    try:
        yield LLM.load(model, dtype=name.partition("-")[0])
    finally:
        quant.UNPACKED_ROWS, quant.BFLOAT16_ROWS, quant.INT8_ROWS = rows


@torch.inference_mode()
def logit_figures(reference, model, token_lists: list[list[int]]) -> dict:
    """Top-1 agreement, mean KL(reference || model) per token, and max |logit difference| over every position."""
    agree = total = 0
    kl_sum, diff = 0.0, 0.0
    for ids in token_lists:
        tokens, positions = torch.tensor([ids]), torch.arange(len(ids))
        a, b = reference(tokens, positions)[0], model(tokens, positions)[0]
        log_p, log_q = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
        kl_sum += float((log_p.exp() * (log_p - log_q)).sum())
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += len(ids)
        diff = max(diff, float((a - b).abs().max()))
    return {"top1": agree / total, "mean_kl": kl_sum / total, "max_abs_logit_diff": diff, "positions": total}


def first_divergence(exact: LLM, other: LLM, text: str, new_tokens: int = 32) -> dict | None:
    """None when `other`'s greedy continuation equals float32's; else where it first differs, with both tokens'
    probabilities under float32 there."""
    ids = exact.tokenizer.encode(text)
    a = exact.engine.submit(ids, _greedy(exact, new_tokens))
    b = other.engine.submit(ids, _greedy(other, new_tokens))
    "".join(a), "".join(b)
    for step, (x, y) in enumerate(zip(a.generated, b.generated, strict=False)):
        if x != y:
            with torch.inference_mode():
                context = torch.tensor([ids + a.generated[:step]])
                probs = torch.softmax(exact.model(context, torch.arange(context.shape[1]))[0, -1], -1)
            return {"step": step, "float32": [x, float(probs[x])], "other": [y, float(probs[y])]}
    return None


def _greedy(llm: LLM, new_tokens: int):
    from core import SamplingParams

    return SamplingParams(max_new_tokens=new_tokens, logit_bias={i: -float("inf") for i in llm.tokenizer.stop_ids})


def table(figures: dict[str, dict]) -> str:
    lines = ["| representation | top-1 agreement | mean KL per token | max abs logit diff | same 32-token greedy | "
             "first divergences (step: float32's token p / the other's p under float32) |", "|---|---|---|---|---|---|"]
    for name, f in figures.items():
        splits = [d for d in f["divergences"] if d is not None]
        shown = "; ".join(f"{d['step']}: {d['float32'][1]:.2f} / {d['other'][1]:.2f}" for d in splits) or "none"
        lines.append(f"| {name} | {f['top1']:.1%} of {f['positions']} | {f['mean_kl']:.5f} | "
                     f"{f['max_abs_logit_diff']:.3f} | {len(f['divergences']) - len(splits)}/{len(f['divergences'])} "
                     f"| {shown} |")
    return "\n".join(lines)


def main() -> None:
    parser = results.parser("accuracy", __doc__)
    parser.add_argument("--model", help="a .gguf file (default: the embedded SmolLM2)")
    args = parser.parse_args()
    exact = LLM.load(args.model, dtype="float32")
    token_lists = [exact.tokenizer.encode(text) for text in TEXTS]
    figures = {}
    for name in REPRESENTATIONS:
        with loaded(name, args.model) as other:
            figures[name] = logit_figures(exact.model, other.model, token_lists)
            figures[name]["divergences"] = [first_divergence(exact, other, text) for text in TEXTS]
    results.write("accuracy", f"Accuracy of each representation against float32: {exact.name}", table(figures),
                  {"model": exact.name, "bounds": BOUNDS, "figures": figures}, args.results)


if __name__ == "__main__":
    main()
