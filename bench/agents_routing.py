"""The routing decision alone on the task set of agents.evaluate: the model's scores and the router's cosines are
computed once per task, then every combination of settings is tried on them (no decoding).

Prints, per setting, the share of tasks whose first step would pick the expected tool, and the seconds that scoring
and embedding took per task. Used to choose agents.routing.Routing's defaults; bench/agents.py measures whole runs.
Run: .venv/bin/python -m bench.agents_routing [--model PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from agents.agent import Agent
from agents.evaluate import TASKS, TOOLS
from agents.routing import FINAL_ANSWER, Routing, _model_scores, combine, router_cosines
from core import LLM


def accuracy(rows: list[tuple], settings: Routing) -> float:
    right = 0
    for expected, model_scores, cosines in rows:
        names = [n for n in model_scores if n != FINAL_ANSWER]
        if settings.top_k is not None:
            names = sorted(names, key=lambda n: -cosines[n])[:settings.top_k]
        cos = {**{n: cosines[n] for n in names}, FINAL_ANSWER: settings.answer_cosine
               if settings.answer_cosine is not None else cosines[FINAL_ANSWER]}
        scores = combine({n: model_scores[n] for n in [*names, FINAL_ANSWER]}, cos, settings)
        chosen = max(scores, key=lambda n: scores[n]["total"])
        if settings.min_cosine is not None and chosen != FINAL_ANSWER and cos[chosen] < settings.min_cosine:
            chosen = FINAL_ANSWER
        right += chosen == expected
    return right / len(rows)


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
    names = [t.name for t in TOOLS] + [FINAL_ANSWER]
    for task in TASKS:
        agent = Agent(llm, TOOLS, routing=None)
        prompt = agent._prompt([{"role": "user", "content": task.prompt}])
        started = time.perf_counter()
        model_scores = _model_scores(llm, prompt, names)
        scoring += time.perf_counter() - started
        started = time.perf_counter()
        cosines = router_cosines(task.prompt, TOOLS, Routing())
        embedding += time.perf_counter() - started
        rows.append((task.tool, model_scores, cosines))
    print(f"scoring {scoring / len(TASKS):.3f} s/task, router {embedding / len(TASKS):.3f} s/task")
    Path(args.rows).write_text(json.dumps(rows))
    report(rows)


def report(rows: list) -> None:
    """Only weight / temperature matters to the choice (the prior's log-normaliser is the same for every
    candidate), so the sweep is over that strength, the cosine final_answer gets, top_k and min_cosine."""
    alone = dict(answer_cosine=None, min_cosine=None)  # final_answer's description embedded, no self-check
    print(f"model alone: {accuracy(rows, Routing(weight=0, **alone)):.0%}; router alone: "
          f"{accuracy(rows, Routing(weight=1000, temperature=1, **alone)):.0%}")
    strengths = (5, 10, 20, 30, 40, 50, 60, 80, 100, 150)
    print("strength (weight / temperature): " + " ".join(f"{s:>4}" for s in strengths))
    for top_k, answer_cosine, min_cosine in itertools.product((None, 1, 2), (None, 0.1, 0.15, 0.2, 0.25, 0.3),
                                                              (None, 0.15)):
        line = [accuracy(rows, Routing(weight=s / 20, temperature=0.05, top_k=top_k, answer_cosine=answer_cosine,
                                       min_cosine=min_cosine)) for s in strengths]
        print(f"top_k={top_k} answer_cosine={answer_cosine} min_cosine={min_cosine}: "
              + " ".join(f"{a:4.0%}" for a in line))

if __name__ == "__main__":
    main()
