"""What float16 / bfloat16 cost in accuracy: logits against float32 on the same weights and prompts.

Reports the max |logit difference| over every position of a few prompts, how often the top-1 token
agrees, and whether 32-token greedy continuations stay identical.
Run: .venv/bin/python bench/accuracy.py [--model PATH]
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

import torch

from core import LLM

PROMPTS = ["The capital of France is", "def fibonacci(n):\n    ", "Once upon a time, in a land far away,",
           "The three laws of thermodynamics state that", "Photosynthesis converts"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .gguf file (default: the embedded SmolLM2)")
    args = parser.parse_args()
    exact = LLM.load(args.model)
    prompts = PROMPTS + [exact.tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+2?"}])]
    lines = [f"# Accuracy of reduced precision: {exact.name}", "",
             f"{date.today()}. Command: `.venv/bin/python bench/accuracy.py`", "",
             "| dtype | max abs logit diff vs float32 | top-1 agreement, prompt positions | same 32-token greedy |",
             "|---|---|---|---|"]
    for dtype in ("float16", "bfloat16"):
        reduced = LLM.load(args.model, dtype=dtype)
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
        lines.append(f"| {dtype} | {diff:.3f} | {agree}/{total} | {same}/{len(prompts)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (Path(__file__).parent / "results" / "accuracy.md").write_text(text)


if __name__ == "__main__":
    main()
