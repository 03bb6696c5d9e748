"""What float16 / bfloat16 cost in accuracy: logits against float32 on the same weights and prompts.

Reports the max |logit difference| over every position of a few prompts, how often the top-1 token
agrees, and whether 32-token greedy continuations stay identical.
Run: .venv/bin/python -m bench.accuracy [--model PATH]
"""

from __future__ import annotations

import torch

from bench import results
from core import LLM

PROMPTS = ["The capital of France is", "def fibonacci(n):\n    ", "Once upon a time, in a land far away,",
           "The three laws of thermodynamics state that", "Photosynthesis converts"]


def compare(exact: LLM, reduced: LLM, prompts: list[str]) -> dict:
    """The figures of one reduced-precision copy of `exact`."""
    diff, agree, total, same = 0.0, 0, 0, 0
    for prompt in prompts:
        ids = torch.tensor([exact.tokenizer.encode(prompt)])
        with torch.inference_mode():
            a = exact.model(ids, torch.arange(ids.shape[1]))
            b = reduced.model(ids, torch.arange(ids.shape[1]))
        diff = max(diff, (a - b).abs().max().item())
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += ids.shape[1]
        same += exact.generate(prompt, max_new_tokens=32) == reduced.generate(prompt, max_new_tokens=32)
    return {"max_abs_logit_diff": diff, "top1_agree": agree, "positions": total, "same_greedy": same,
            "prompts": len(prompts)}


def table(figures: dict[str, dict]) -> str:
    """figures: {dtype: compare(...)} as a markdown table."""
    lines = ["| dtype | max abs logit diff vs float32 | top-1 agreement, prompt positions | same 32-token greedy |",
             "|---|---|---|---|"]
    for dtype, f in figures.items():
        lines.append(f"| {dtype} | {f['max_abs_logit_diff']:.3f} | {f['top1_agree']}/{f['positions']} | "
                     f"{f['same_greedy']}/{f['prompts']} |")
    return "\n".join(lines)


def main() -> None:
    parser = results.parser("accuracy", __doc__)
    parser.add_argument("--model", help="a .gguf file (default: the embedded SmolLM2)")
    args = parser.parse_args()
    exact = LLM.load(args.model)
    prompts = PROMPTS + [exact.tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+2?"}])]
    figures = {dtype: compare(exact, LLM.load(args.model, dtype=dtype), prompts) for dtype in ("float16", "bfloat16")}
    results.write("accuracy", f"Accuracy of reduced precision: {exact.name}", table(figures),
                  {"model": exact.name, "figures": figures}, args.results)


if __name__ == "__main__":
    main()
