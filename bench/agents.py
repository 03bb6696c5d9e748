"""Tool use on the local model: the frozen task sets of agents.tasks, constrained decoding, greedy.

`--set original`: the first 32 tasks over 4 tools; `--set extended`: 55 tasks over 12 tools whose names
and descriptions overlap, with tasks that need no tool and tasks phrased as users write; `--set all`
(the default): both, each over its own tools. Figures per set: valid-step rate (steps whose output parsed
into a known tool's valid call or a final answer; constrained decoding should make it 100%), right-tool
and right-arguments rates (judged on each run's first step), steps and seconds per task, overall, per
expected tool and per phrasing style. Tasks run in threads, so the engine decodes them as one batch:
seconds per task are wall time inside that batch. The Agent settings come from `agent_options` alone and
are written into the results. `--routing off` decodes each step as one constrained call over every tool (the
agent before agents.routing); `on` (the default, as Agent's for a local model) chooses the tool first, then its
arguments.
Run: .venv/bin/python -m bench.agents [--set all] [--model PATH] [--max-steps 2] [--workers 8] [--routing on|off]
"""

from __future__ import annotations

import argparse
import time

from agents.evaluate import Outcome, evaluate, summary
from agents.routing import Routing
from agents.tasks import SETS
from bench import results
from core import LLM
from core.quant import Int4Linear

OPTIONS = dict(step_tokens=160, max_string_length=40)  # as in tests/test_agents_smollm2.py
COLUMNS = "tasks | valid steps | right tool | right arguments | steps / task | s / task"


def agent_options(args: argparse.Namespace) -> dict:
    """The settings every task's Agent gets: the one place a command-line option becomes an Agent setting."""
    return {"max_steps": args.max_steps, **OPTIONS}


def grouped(outcomes: list[Outcome], key) -> list[tuple[str, dict]]:
    """The summary of `outcomes` under "all", then one per value of `key(outcome)`, in order of appearance."""
    groups = [("all", outcomes)]
    for value in dict.fromkeys(key(o) for o in outcomes):
        groups.append((value, [o for o in outcomes if key(o) == value]))
    return [(name, summary(group)) for name, group in groups]


def rows(outcomes: list[Outcome]) -> list[tuple[str, dict]]:
    return grouped(outcomes, lambda o: o.task.tool)


def style_rows(outcomes: list[Outcome]) -> list[tuple[str, dict]]:
    """Per phrasing style; none for a set whose tasks are not labelled."""
    labelled = [o for o in outcomes if o.task.style]
    return grouped(labelled, lambda o: o.task.style)[1:] if labelled else []


def table(first: str, named: list[tuple[str, dict]]) -> list[str]:
    lines = [f"| {first} | {COLUMNS} |", "|---" * (COLUMNS.count("|") + 2) + "|"]
    for name, s in named:
        lines.append(f"| {name} | {s['tasks']} | {s['valid_step_rate']:.0%} | {s['right_tool_rate']:.0%} | "
                     f"{s['right_arguments_rate']:.0%} | {s['steps_per_task']:.2f} | {s['seconds_per_task']:.1f} |")
    return lines


def markdown(runs: dict[str, list[Outcome]], setup: str) -> str:
    """`runs`: each set's outcomes, by set name."""
    lines = [setup, ""]
    if len(runs) > 1:
        overall = [(name, summary(outcomes)) for name, outcomes in runs.items()]
        agents = dict.fromkeys(name.partition(", ")[2] for name in runs)  # "routing on", "routing off", or ""
        overall += [(f"all sets{', ' + agent if agent else ''}",
                     summary([o for name, outcomes in runs.items() if name.partition(", ")[2] == agent
                              for o in outcomes])) for agent in agents]
        lines += [*table("set", overall), ""]
    for name, outcomes in runs.items():
        tools = len(SETS[name.split(",")[0]].tools)
        lines += [f"## {name} set: {len(outcomes)} tasks, {tools} tools", "", *table("expected tool", rows(outcomes))]
        if styles := style_rows(outcomes):
            lines += ["", *table("style", styles)]
        lines.append("")
    lines += ["Per task (first step; `valid` covers every step of the run):", "",
              "| set | task | expected | called | valid | args | status | first output |",
              "|---|---|---|---|---|---|---|---|"]
    for name, outcomes in runs.items():
        for o in outcomes:
            output = o.first.output.replace("|", "\\|")
            lines.append(f"| {name} | {o.task.prompt} | {o.task.tool} | {o.first.tool} | "
                         f"{'yes' if o.valid else 'NO'} | {'yes' if o.right_arguments else 'no'} | {o.status} | "
                         f"`{output[:90]}` |")
    return "\n".join(lines)


def data(runs: dict[str, list[Outcome]]) -> dict:
    return {"summary": {name: dict(rows(outcomes)) for name, outcomes in runs.items()},
            "style_summary": {name: dict(style_rows(outcomes)) for name, outcomes in runs.items()},
            "tasks": [{"set": name, "prompt": o.task.prompt, "style": o.task.style, "expected_tool": o.task.tool,
                       "expected_arguments": o.task.arguments, "status": o.status, "valid": o.valid,
                       "right_tool": o.right_tool, "right_arguments": o.right_arguments, "seconds": o.seconds,
                       "steps": [step.to_dict() for step in o.steps]}
                      for name, outcomes in runs.items() for o in outcomes]}


def main() -> None:
    parser = results.parser("agents", __doc__)
    parser.add_argument("--set", choices=[*SETS, "all"], default="all", help="which task set (default: all)")
    parser.add_argument("--model", help="a .gguf file (default: the embedded SmolLM2)")
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--routing", choices=("on", "off", "both"), default="both",
                        help="the agent with agents.routing, without it, or both in one run (the default)")
    parser.add_argument("--note", default="", help="added under the setup, e.g. what else loaded the machine")
    args = parser.parse_args()
    llm = LLM.load(args.model)
    options = agent_options(args)
    runs, walls = {}, {}
    for mode in ("on", "off") if args.routing == "both" else [args.routing]:
        for name in SETS if args.set == "all" else [args.set]:
            started = time.perf_counter()
            label = f"{name}, routing {mode}"
            runs[label] = evaluate(llm, SETS[name].tasks, workers=args.workers, tools=SETS[name].tools,
                                   routing=Routing() if mode == "on" else None, **options)
            walls[label] = time.perf_counter() - started
    representation = "int4" if isinstance(llm.model.layers[0].attn.wq, Int4Linear) else str(llm.model.dtype)[6:]
    setup = (f"{llm.name}, {representation}, greedy, {', '.join(f'{k}={v}' for k, v in options.items())}, routing on: "
             f"{Routing()}, {args.workers} tasks at a time; "
             + "; ".join(f"{name}: {len(runs[name])} tasks in {walls[name]:.0f} s wall" for name in runs) + "."
             + (f"\n\n{args.note}" if args.note else ""))
    recorded = options | {"routing": args.routing}
    results.write("agents", f"Agents: tool use on {args.model or 'the embedded SmolLM2-135M-Instruct'}",
                  markdown(runs, setup), {"model": llm.name, "set": args.set, "workers": args.workers,
                                          "agent_options": recorded,
                                          "wall_seconds": walls, **data(runs)}, args.results)


if __name__ == "__main__":
    main()
