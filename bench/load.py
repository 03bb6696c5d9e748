"""Cold start: seconds from a fresh process to a model and tokenizer ready to generate, ours vs transformers.

Each figure is a new Python process (so nothing is warm but the OS page cache), the median of
--repeats runs. "first load" is ours with an empty converted cache (reads and dequantises the GGUF).
Run: .venv/bin/python -m bench.load [--model PATH] [--repeats 3]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import results

OURS = """
import time, json; t0 = time.perf_counter()
from core.loading import load_model
t1 = time.perf_counter(); load_model({model!r}); t2 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "load": t2 - t1}}))
"""
TRANSFORMERS = """
import time, json, os; t0 = time.perf_counter()
from transformers import AutoModelForCausalLM, AutoTokenizer
t1 = time.perf_counter(); folder, name = os.path.split({model!r})
AutoTokenizer.from_pretrained(folder, gguf_file=name); AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
t2 = time.perf_counter(); print(json.dumps({{"import": t1 - t0, "load": t2 - t1}}))
"""


def timed(code: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(runs: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def table(figures: dict[str, dict]) -> str:
    """figures: {what: {"import": s, "load": s}}, the last one the reference the others are compared with."""
    lines = ["| what | import s | load s | total s | total vs transformers |", "|---|---|---|---|---|"]
    reference = list(figures.values())[-1]
    for name, r in figures.items():
        total = r["import"] + r["load"]
        lines.append(f"| {name} | {r['import']:.2f} | {r['load']:.2f} | {total:.2f} | "
                     f"{total / (reference['import'] + reference['load']):.3f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = results.parser("load", __doc__)
    parser.add_argument("--model", help="a .gguf file (default: the embedded SmolLM2)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from core.resolve import resolve_model

    model = str(resolve_model(args.model))
    with tempfile.TemporaryDirectory() as cache:
        first = timed(OURS.format(model=model), {"LLMKIT_CACHE": cache})
        ours = median([timed(OURS.format(model=model), {"LLMKIT_CACHE": cache}) for _ in range(args.repeats)])
    reference = median([timed(TRANSFORMERS.format(model=model)) for _ in range(args.repeats)])
    figures = {"llmkit, cached (normal start)": ours, "llmkit, first load (converts the GGUF)": first,
               "transformers (GGUF)": reference}
    body = (f"Median of {args.repeats} fresh processes.\n\n{table(figures)}\n\n"
            f"Load only (model + tokenizer, after imports): llmkit {ours['load']:.2f} s vs transformers "
            f"{reference['load']:.2f} s, {reference['load'] / ours['load']:.0f}x faster.")
    results.write("load", f"Cold start: {Path(model).name}", body, {"model": Path(model).name, "repeats": args.repeats,
                                                                    "seconds": figures}, args.results)


if __name__ == "__main__":
    main()
