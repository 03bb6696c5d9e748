"""The routing decision alone on the frozen task sets of agents.tasks: the model's scores and the router's cosines
are computed once per task, then every combination of settings is tried on them (no decoding).

Prints, per setting, the share of tasks whose first step would pick the expected tool (original set, extended set),
and the seconds that scoring and embedding took per task. Used to choose agents.routing.Routing's defaults;
bench/agents.py measures whole runs.
Run: .venv/bin/python -m bench.agents_routing [--model PATH] [--sweep]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from agents.agent import Agent
from agents.routing import (
    FINAL_ANSWER,
    Routing,
    _model_scores,
    choose,
    embedded_embedder,
    lexical_scores,
    router_cosines,
    tool_text,
)
from agents.tasks import SETS
from core import LLM


def accuracy(rows: list[list], settings: Routing, set_name: str, with_arguments: bool = False) -> float:
    """The share of `set_name`'s tasks routed right. Rows: set, prompt, expected tool, model scores, the router's
    cosines, and the cosines it would have with the tools' argument descriptions embedded too (`with_arguments`)."""
    chosen = [expected == choose(model_scores, both[with_arguments], lexical_scores(prompt, SETS[name].tools),
                                 settings)[0]
              for name, prompt, expected, model_scores, *both in rows if name == set_name]
    return sum(chosen) / len(chosen)


def cosines_with_arguments(task: str, tools: list, cosines: dict[str, float]) -> dict[str, float]:
    """`cosines` with each tool's taken against its whole `tool_text`, argument descriptions included."""
    embedder = embedded_embedder()
    vectors = embedder.embed([tool_text(t) for t in tools] + [task])
    return {**cosines, **{t.name: float(vector @ vectors[-1]) for t, vector in zip(tools, vectors[:-1], strict=True)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model")
    parser.add_argument("--rows", default="bench/results/agents_routing_rows.json",
                        help="where the scores are written; --sweep reads them instead of scoring again")
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    if args.sweep:
        return report(json.loads(Path(args.rows).read_text()))
    llm = LLM.load(args.model)
    rows, scoring, embedding = [], 0.0, 0.0
    for name, task_set in SETS.items():
        names = [t.name for t in task_set.tools] + [FINAL_ANSWER]
        for task in task_set.tasks:
            agent = Agent(llm, task_set.tools, routing=None)
            prompt = agent._prompt([{"role": "user", "content": task.prompt}])
            started = time.perf_counter()
            model_scores = _model_scores(llm, prompt, names)
            scoring += time.perf_counter() - started
            started = time.perf_counter()
            cosines = router_cosines(task.prompt, task_set.tools, Routing(answer_cosine=None))
            embedding += time.perf_counter() - started
            rows.append([name, task.prompt, task.tool, model_scores, cosines,
                         cosines_with_arguments(task.prompt, task_set.tools, cosines)])
    print(f"scoring {scoring / len(rows):.3f} s/task, router {embedding / len(rows):.3f} s/task")
    Path(args.rows).write_text(json.dumps(rows))
    report(rows)


def report(rows: list) -> None:
    """Only weight / temperature matters to the choice (the prior's log-normaliser is the same for every
    candidate), so the sweep is over that strength, the lexical weight, the cosine final_answer gets and
    min_cosine. Each cell: original / extended. top_k is not swept: on these rows 3 picks as None does."""
    alone = dict(answer_cosine=None, min_cosine=None)  # final_answer's description embedded, no self-check

    def both(settings: Routing) -> str:
        return f"{accuracy(rows, settings, 'original'):4.0%}/{accuracy(rows, settings, 'extended'):4.0%}"

    print(f"model alone: {both(Routing(weight=0, **alone))}; router alone, cosine only: "
          f"{both(Routing(weight=1000, temperature=1, lexical=0, **alone))}; with lexical=0.1: "
          f"{both(Routing(weight=1000, temperature=1, lexical=0.1, **alone))}; lexical mostly (lexical=1): "
          f"{both(Routing(weight=1000, temperature=1, lexical=1, **alone))}")
    for settings in (Routing(), Routing(min_cosine=0.15)):
        with_arguments = (f"{accuracy(rows, settings, 'original', True):4.0%}/"
                          f"{accuracy(rows, settings, 'extended', True):4.0%}")
        print(f"min_cosine={settings.min_cosine}, other settings the defaults: router text name and description "
              f"(the default) {both(settings)}; with the argument descriptions too {with_arguments}")
    strengths = (10, 20, 40, 60, 100)
    print("strength (weight / temperature): " + " ".join(f"{s:>9}" for s in strengths))
    for lexical, answer_cosine, min_cosine in itertools.product((0, 0.02, 0.05, 0.1), (0.15, 0.2, 0.25, 0.3),
                                                               (None, 0.15, 0.2)):
        line = [both(Routing(weight=s / 20, temperature=0.05, lexical=lexical, answer_cosine=answer_cosine,
                             min_cosine=min_cosine)) for s in strengths]
        print(f"lexical={lexical} answer_cosine={answer_cosine} min_cosine={min_cosine}: " + " ".join(line))


if __name__ == "__main__":
    main()
