"""llmkit debug on the frozen bug set: localisation top-1 / top-3, verified repairs, wrong patches, seconds per bug;
and llmkit review's analyzers on this repository (every line, no model): seconds in all and per tool.

bench/bugs/ holds small projects (a module and a pytest file), each failing because of one seeded bug;
bench/bugs/manifest.json records, per project, the buggy file and line, the bug's kind, whether a single
edit by one of our mutation operators was expected to fix it (`fixable`, written with the set, before the
repair engine was tuned) and the reference fix of that line. The set is frozen: change the engine, not the bugs.

Per bug: is the buggy line the most suspicious (top-1) or among the first three (top-3); how many verified
patches, and whether the best one equals the reference fix; and every patch reported is re-checked outside
the pipeline: `git apply` on a fresh git copy of the project, then the plain test command in a sandbox — a
patch that does not apply or leaves a test failing counts as wrong (the target is 0). Runs the deterministic
pipeline unless `--model` is given (then the model is asked where no operator's patch verified).
Run: .venv/bin/python -m bench.code_review [--max-seconds 50] [--max-candidates 200] [--only NAME ...] [--model M]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from apps.code_review.analyzers import run_analyzers
from apps.code_review.debug import debug
from apps.code_review.inputs import from_path
from apps.code_review.sandbox import Sandbox
from bench import results

BUGS = Path(__file__).parent / "bugs"
REPOSITORY = Path(__file__).resolve().parent.parent


def analyzers_on(root: Path) -> dict:
    """What `llmkit review ROOT --all-lines --no-model` spends in its analyzers (they run at once, so the wall
    time is about the slowest one's)."""
    with from_path(root) as target:
        start = time.perf_counter()
        runs = run_analyzers(target.root, target.files)
        return {"files": len(target.files), "seconds": time.perf_counter() - start,
                "tools": {run.tool: {"status": run.status, "seconds": run.seconds, "findings": len(run.findings)}
                          for run in runs}}


def manifest() -> dict[str, dict]:
    return json.loads((BUGS / "manifest.json").read_text())


def applies_and_passes(project: Path, diff: str) -> bool:
    """The independent re-check: the diff applies with `git apply` on a fresh git copy, and the tests then pass."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "project"
        shutil.copytree(project, copy)
        git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "-C", str(copy)]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", "buggy"], check=True)
        if subprocess.run([*git, "apply", "-"], input=diff, text=True, capture_output=True).returncode:
            return False
        with Sandbox(copy) as sandbox:
            return sandbox.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]).returncode == 0


def evaluate(name: str, bug: dict, max_seconds: float, max_candidates: int, llm=None) -> dict:
    start = time.perf_counter()
    result = debug(BUGS / name, max_seconds=max_seconds, max_candidates=max_candidates, llm=llm)
    seconds = time.perf_counter() - start
    lines = [(s.file, s.line) for s in result.suspicious]
    target = (bug["file"], bug["line"])
    rank = lines.index(target) + 1 if target in lines else None
    wrong = sum(not applies_and_passes(BUGS / name, patch.diff) for patch in result.patches)
    best = result.patches[0] if result.patches else None
    fix = bug["fix"].splitlines()
    reference = (best is not None and best.file == bug["file"]
                 and best.text.splitlines()[bug["line"] - 1:bug["line"] - 1 + len(fix)] == fix)
    return {"bug": name, "kind": bug["kind"], "fixable": bug["fixable"], "rank": rank, "patches": len(result.patches),
            "wrong": wrong, "best": best.operator if best else None, "reference_fix": reference,
            "model_patches": sum(p.source == "model" for p in result.patches),
            "tried": result.tried, "stopped": result.stopped, "problem": result.problem,
            "seconds": round(seconds, 2), "isolation": result.isolation}


def summary(rows: list[dict]) -> dict:
    count = len(rows)
    fixable = [r for r in rows if r["fixable"]]
    return {"bugs": count, "top1": sum(r["rank"] == 1 for r in rows) / count,
            "top3": sum(r["rank"] is not None and r["rank"] <= 3 for r in rows) / count,
            "repaired": sum(r["patches"] > 0 for r in rows) / count,
            "repaired_fixable": sum(r["patches"] > 0 for r in fixable) / max(1, len(fixable)),
            "reference_fix": sum(r["reference_fix"] for r in rows) / count,
            "wrong_patches": sum(r["wrong"] for r in rows),
            "patched_unfixable": sum(r["patches"] > 0 for r in rows if not r["fixable"]),
            "model_patches": sum(r.get("model_patches", 0) for r in rows),
            "seconds_per_bug": sum(r["seconds"] for r in rows) / count,
            "max_seconds": max(r["seconds"] for r in rows)}


def analyzers_markdown(a: dict) -> str:
    tools = ", ".join(f"{tool} {t['seconds']:.1f} s ({t['findings']} findings"
                      f"{'' if t['status'] == 'ok' else ', ' + t['status']})" for tool, t in a["tools"].items())
    return (f"Analyzers on this repository ({a['files']} Python files, every line, no model): "
            f"{a['seconds']:.1f} s wall; {tools}.")


def markdown(rows: list[dict], s: dict, setup: str, analyzers: dict | None = None) -> str:
    lines = [setup, "", *([analyzers_markdown(analyzers), ""] if analyzers else []),
             "| bugs | top-1 | top-3 | verified repair | best = reference fix | wrong patches | s / bug | max s |",
             "|---|---|---|---|---|---|---|---|",
             f"| {s['bugs']} | {s['top1']:.0%} | {s['top3']:.0%} | {s['repaired']:.0%} (expected-fixable: "
             f"{s['repaired_fixable']:.0%}) | {s['reference_fix']:.0%} | {s['wrong_patches']} | "
             f"{s['seconds_per_bug']:.1f} | {s['max_seconds']:.1f} |", "",
             f"Bugs no single edit was expected to fix, patched anyway (by an edit the tests accept): "
             f"{s['patched_unfixable']}. Verified patches the model wrote: {s['model_patches']}.", "",
             "| bug | kind | expected fixable | rank of buggy line | verified patches | best (operator) | "
             "= reference | wrong | candidates tried | s |", "|---" * 10 + "|"]
    for r in rows:
        lines.append(f"| {r['bug']} | {r['kind']} | {'yes' if r['fixable'] else 'no'} | {r['rank'] or '-'} | "
                     f"{r['patches']} | {r['best'] or 'no verified patch'} | {'yes' if r['reference_fix'] else 'no'} | "
                     f"{r['wrong']} | {r['tried']}{' (budget)' if r['stopped'] else ''} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = results.parser("code_review", __doc__)
    parser.add_argument("--max-seconds", type=float, default=50.0, help="debug()'s patch-search budget per bug")
    parser.add_argument("--max-candidates", type=int, default=200)
    parser.add_argument("--only", nargs="*", help="bug names (default: all)")
    parser.add_argument("--note", default="", help="added under the setup, e.g. what else loaded the machine")
    parser.add_argument("--model", help="also ask this model (a spec for core.load; 'embedded' for SmolLM2) where "
                        "no operator's patch verifies (default: no model)")
    args = parser.parse_args()
    llm = None
    if args.model:
        from core import load

        llm = load(None if args.model == "embedded" else args.model)
    load_before = os.getloadavg()[0]
    bugs = {name: bug for name, bug in manifest().items() if not args.only or name in args.only}
    rows = []
    for name, bug in bugs.items():
        rows.append(evaluate(name, bug, args.max_seconds, args.max_candidates, llm))
        print(json.dumps(rows[-1]), flush=True)
    s = summary(rows)
    pipeline = f"model {llm.name} where no operator's patch verified" if llm else "deterministic pipeline (no model)"
    setup = (f"{pipeline[0].upper()}{pipeline[1:]}, `pytest -q`, max_seconds={args.max_seconds:g}, "
             f"max_candidates={args.max_candidates}; isolation: {rows[0]['isolation']}. Load average (1 min) "
             f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end."
             + (f"\n\n{args.note}" if args.note else ""))
    if not args.only:
        analyzers = analyzers_on(REPOSITORY)
        results.write("code_review", "Code review: llmkit debug on the frozen bug set, and the analyzers",
                      markdown(rows, s, setup, analyzers),
                      {"summary": s, "bugs": rows, "analyzers": analyzers, "max_seconds": args.max_seconds,
                       "max_candidates": args.max_candidates}, args.results)
    else:
        print(markdown(rows, s, setup))


if __name__ == "__main__":
    main()
