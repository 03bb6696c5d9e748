"""Tool use on the local model: the task set of agents.evaluate (32 tasks, 4 tools), constrained decoding, greedy.

Figures: valid-step rate (steps whose output parsed into a known tool's valid call or a final answer;
constrained decoding should make it 100%), right-tool and right-arguments rates (judged on each run's
first step), steps and seconds per task, overall and per expected tool. Tasks run in threads, so
the engine decodes them as one batch: seconds per task are wall time inside that batch.
Run: .venv/bin/python -m bench.agents [--model PATH] [--max-steps 2] [--workers 8]
(as a module: run as a file, this script's directory comes first on sys.path and `agents` would be this file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.evaluate import Outcome

RESULTS = Path(__file__).parent / "results"
OPTIONS = dict(step_tokens=160, max_string_length=40)  # as in tests/test_agents_smollm2.py


def rows(outcomes: list[Outcome]) -> list[tuple[str, dict]]:
    from agents.evaluate import summary

    groups = [("all", outcomes)]
    for tool in dict.fromkeys(o.task.tool for o in outcomes):
        groups.append((tool, [o for o in outcomes if o.task.tool == tool]))
    return [(name, summary(group)) for name, group in groups]


def markdown(outcomes: list[Outcome], header: str, model: str) -> str:
    lines = [f"# Agents: tool use on {model}", "", header, "",
             "| expected tool | tasks | valid steps | right tool | right arguments | steps / task | s / task |",
             "|---|---|---|---|---|---|---|"]
    for name, s in rows(outcomes):
        lines.append(f"| {name} | {s['tasks']} | {s['valid_step_rate']:.0%} | {s['right_tool_rate']:.0%} | "
                     f"{s['right_arguments_rate']:.0%} | {s['steps_per_task']:.2f} | {s['seconds_per_task']:.1f} |")
    lines += ["", "Per task (first step; `valid` covers every step of the run):", "",
              "| task | expected | called | valid | args | status | first output |", "|---|---|---|---|---|---|---|"]
    for o in outcomes:
        output = o.first.output.replace("|", "\\|")
        lines.append(f"| {o.task.prompt} | {o.task.tool} | {o.first.tool} | {'yes' if o.valid else 'NO'} | "
                     f"{'yes' if o.right_arguments else 'no'} | {o.status} | `{output[:90]}` |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .gguf file (default: the embedded SmolLM2)")
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--note", default="", help="added under the header, e.g. what else loaded the machine")
    args = parser.parse_args()
    if not __package__:
        raise SystemExit("run it as a module, from the repository root: .venv/bin/python -m bench.agents")
    from agents.evaluate import TASKS, evaluate
    from core import LLM

    llm = LLM.load(args.model)
    started = time.perf_counter()
    outcomes = evaluate(llm, TASKS, workers=args.workers, max_steps=args.max_steps, **OPTIONS)
    wall = time.perf_counter() - started
    header = (f"{date.today()}, {platform.machine()}, {os.cpu_count()} cores, {llm.name}, float32, greedy, "
              f"max_steps={args.max_steps}, {args.workers} tasks at a time, step_tokens={OPTIONS['step_tokens']}, "
              f"max_string_length={OPTIONS['max_string_length']}; {len(TASKS)} tasks in {wall:.0f} s wall. "
              f"Command: `.venv/bin/python -m bench.agents`" + (f"\n\n{args.note}" if args.note else ""))
    text = markdown(outcomes, header, args.model or "the embedded SmolLM2-135M-Instruct")
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "agents.json").write_text(json.dumps({
        "date": str(date.today()), "model": llm.name, "max_steps": args.max_steps, "workers": args.workers,
        **OPTIONS, "wall_seconds": wall, "summary": dict(rows(outcomes)),
        "tasks": [{"prompt": o.task.prompt, "expected_tool": o.task.tool, "expected_arguments": o.task.arguments,
                   "status": o.status, "valid": o.valid, "right_tool": o.right_tool,
                   "right_arguments": o.right_arguments, "seconds": o.seconds,
                   "steps": [step.to_dict() for step in o.steps]} for o in outcomes]}, indent=1))
    (RESULTS / "agents.md").write_text(text)


if __name__ == "__main__":
    main()
