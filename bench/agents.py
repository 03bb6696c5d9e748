"""Tool use on the local model: the task set of agents.evaluate (32 tasks, 4 tools), constrained decoding, greedy.

Figures: valid-step rate (steps whose output parsed into a known tool's valid call or a final answer;
constrained decoding should make it 100%), right-tool and right-arguments rates (judged on each run's
first step), steps and seconds per task, overall and per expected tool. Tasks run in threads, so
the engine decodes them as one batch: seconds per task are wall time inside that batch.
`--routing off` decodes each step as one constrained call over every tool (the agent before agents.routing);
`on` (the default, as Agent's for a local model) chooses the tool first, then its arguments.
Run: .venv/bin/python -m bench.agents [--model PATH] [--max-steps 2] [--workers 8] [--routing on|off]
"""

from __future__ import annotations

import time

from agents.evaluate import TASKS, Outcome, evaluate, summary
from agents.routing import Routing
from bench import results
from core import LLM

OPTIONS = dict(step_tokens=160, max_string_length=40)  # as in tests/test_agents_smollm2.py


def rows(outcomes: list[Outcome]) -> list[tuple[str, dict]]:
    groups = [("all", outcomes)]
    for tool in dict.fromkeys(o.task.tool for o in outcomes):
        groups.append((tool, [o for o in outcomes if o.task.tool == tool]))
    return [(name, summary(group)) for name, group in groups]


def markdown(outcomes: list[Outcome], setup: str) -> str:
    lines = [setup, "",
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
    return "\n".join(lines)


def data(outcomes: list[Outcome]) -> dict:
    return {"summary": dict(rows(outcomes)),
            "tasks": [{"prompt": o.task.prompt, "expected_tool": o.task.tool, "expected_arguments": o.task.arguments,
                       "status": o.status, "valid": o.valid, "right_tool": o.right_tool,
                       "right_arguments": o.right_arguments, "seconds": o.seconds,
                       "steps": [step.to_dict() for step in o.steps]} for o in outcomes]}


def main() -> None:
    parser = results.parser("agents", __doc__)
    parser.add_argument("--model", help="a .gguf file (default: the embedded SmolLM2)")
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--routing", choices=("on", "off"), default="on")
    parser.add_argument("--note", default="", help="added under the setup, e.g. what else loaded the machine")
    args = parser.parse_args()
    llm = LLM.load(args.model)
    started = time.perf_counter()
    routing = Routing() if args.routing == "on" else None
    outcomes = evaluate(llm, TASKS, workers=args.workers, max_steps=args.max_steps, routing=routing, **OPTIONS)
    wall = time.perf_counter() - started
    setup = (f"{llm.name}, float32, greedy, routing {args.routing}"
             f"{f' ({routing})' if routing else ''}, max_steps={args.max_steps}, {args.workers} tasks at a time, "
             f"step_tokens={OPTIONS['step_tokens']}, max_string_length={OPTIONS['max_string_length']}; "
             f"{len(TASKS)} tasks in {wall:.0f} s wall." + (f"\n\n{args.note}" if args.note else ""))
    results.write("agents", f"Agents: tool use on {args.model or 'the embedded SmolLM2-135M-Instruct'}",
                  markdown(outcomes, setup), {"model": llm.name, "routing": str(routing), "max_steps": args.max_steps,
                                              "workers": args.workers, **OPTIONS, "wall_seconds": wall,
                                              **data(outcomes)}, args.results)


if __name__ == "__main__":
    main()
