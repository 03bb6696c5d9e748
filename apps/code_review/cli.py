"""`llmkit review` and `llmkit debug`: their flags, and the calls into the library.

apps/cli.py's APPS table names this module for both commands; `add_arguments` gives a parser the flags of the
command it was made for (its prog ends with the command's name), and `run` goes by `args.command`. Imported to
build the parser, so it imports no model library: the model loads only when a finding is to be explained, and the
debugger (apps.code_review.debug) is imported only by `llmkit debug`.

`llmkit review` prints the report on stdout and exits 1 when a finding is at or above --fail-on (default error),
so it works as a CI step or a pre-commit hook; bad input (a missing path, a range that is not one, an empty diff)
exits 1 with one `llmkit: ...` line. `llmkit debug --json` prints one JSON object on stdout; nothing in PATH is
changed unless --apply is given; with a model (no --no-model), each verified patch gets an explanation chosen
among sentences built from its diff and the tests it made pass ("explanation" in its JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from apps.code_review.analyzers import ANALYZERS, COMPLEXITY_THRESHOLD, DEFAULT_TIMEOUT
from apps.code_review.explain import MAX_EXPLAINED, explain, patch_candidates
from apps.code_review.inputs import MAX_DIFF_BYTES, InputError, Target, from_diff, from_git, from_paths
from apps.code_review.report import FAIL_ON, FORMATS, exit_code, render
from apps.common import add_model_flags

DEBUG_CANDIDATES = 200  # candidate patches tried, at most
DEBUG_SECONDS = 300.0  # for the whole run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    command = parser.prog.rsplit(" ", 1)[-1]
    {"review": add_review_arguments, "debug": add_debug_arguments}[command](parser)


def run(args: argparse.Namespace) -> None:
    {"review": run_review, "debug": run_debug}[args.command](args)


# --- llmkit review ----------------------------------------------------------------------------------------------------

def add_review_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Run ruff, bandit, radon (and mypy if installed) on Python code; print the findings, each "
                          "explained by the model, as Markdown, JSON, SARIF or GitHub annotations. On a diff or a "
                          "revision range only the changed lines are reviewed.")
    what = parser.add_argument_group("what to review (one of)")
    what.add_argument("paths", nargs="*", metavar="PATH", help="a folder (in a git work tree: the files git tracks), "
                      "or Python files")
    what.add_argument("--diff", metavar="FILE", help="a unified diff (`git diff` output); - reads stdin. Its files "
                      "are read from --root, which holds the diff's new side")
    what.add_argument("--git", metavar="REPO", help="a git repository, with --range")
    parser.add_argument("--range", dest="revisions", metavar="A..B", help="with --git: the commits to review "
                        "(A..B, A...B from their merge base, or A for A..HEAD)")
    parser.add_argument("--root", default=".", help="with --diff: the folder the diff's paths are relative to "
                        "(default: the current one)")
    output = parser.add_argument_group("output")
    output.add_argument("--format", choices=FORMATS, default="markdown", help="default markdown")
    output.add_argument("--json", action="store_true", help="the same as --format json")
    output.add_argument("--output", "-o", metavar="FILE", help="write the report there instead of stdout")
    output.add_argument("--fail-on", choices=FAIL_ON, default="error", help="exit with status 1 when a finding is "
                        "at or above this severity (default error; never: always 0)")
    analysis = parser.add_argument_group("analysis")
    analysis.add_argument("--all-lines", action="store_true", help="on a diff or range, report findings on every "
                          "line of the changed files, not only the changed lines")
    analysis.add_argument("--tools", default=",".join(ANALYZERS), help=f"analyzers to run, comma-separated "
                          f"(default {','.join(ANALYZERS)}; mypy runs only if installed)")
    analysis.add_argument("--complexity", type=int, default=COMPLEXITY_THRESHOLD, help="report functions whose "
                          f"cyclomatic complexity is above this (default {COMPLEXITY_THRESHOLD})")
    analysis.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per analyzer "
                          f"(default {DEFAULT_TIMEOUT:g})")
    explaining = parser.add_argument_group("explanations")
    explaining.add_argument("--no-model", action="store_true", help="no explanations: the findings alone, no model "
                            "loaded")
    explaining.add_argument("--explain", choices=["choose", "write"], default="choose", help="choose (default): the "
                            "model picks among sentences from the rule's documentation; write: it writes them "
                            "(bounded; for big models)")
    explaining.add_argument("--max-explained", type=int, default=MAX_EXPLAINED, help="findings explained, the "
                            f"most severe first (default {MAX_EXPLAINED})")
    add_model_flags(parser)


def open_target(args: argparse.Namespace) -> Target:
    """The Target the flags name; InputError when they name none, or more than one."""
    given = [name for name in ("paths", "diff", "git") if getattr(args, name)]
    if len(given) != 1:
        raise InputError("give one of PATH, --diff FILE (- for stdin) or --git REPO --range A..B")
    if args.revisions and not args.git:
        raise InputError("--range goes with --git REPO")
    if args.paths:
        return from_paths(args.paths)
    if args.git:
        if not args.revisions:
            raise InputError("--git needs --range A..B (the commits to review)")
        return from_git(args.git, args.revisions)
    if args.diff == "-":
        text = sys.stdin.read(MAX_DIFF_BYTES + 1)
    else:
        try:
            with open(args.diff, encoding="utf-8", errors="replace") as file:
                text = file.read(MAX_DIFF_BYTES + 1)
        except OSError as error:
            raise InputError(f"cannot read the diff {args.diff[:200]!r}: {error.strerror}") from None
    return from_diff(text, args.root)


def run_review(args: argparse.Namespace) -> None:
    from apps.code_review.review import review

    fmt = "json" if args.json else args.format
    tools = tuple(tool.strip() for tool in args.tools.split(",") if tool.strip())
    with open_target(args) as target:
        llm = None
        if not args.no_model:
            from core import load

            llm = load(args.model, dtype=args.dtype, model_name=args.model_name, api_key=args.api_key)
        result = review(target, all_lines=args.all_lines, tools=tools, complexity=args.complexity,
                        timeout=args.timeout, llm=llm, style=args.explain, max_explained=args.max_explained)
    text = render(result, fmt)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    for run_ in result.runs:
        if run_.status != "ok" and fmt not in ("json", "sarif"):  # those carry it inside
            print(f"llmkit review: {run_.tool} {run_.status}: {run_.message[:300]}", file=sys.stderr)
    sys.stdout.flush()
    code = exit_code(result, args.fail_on)
    if code:
        sys.exit(code)


# --- llmkit debug -----------------------------------------------------------------------------------------------------

def add_debug_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Run a project's tests in a sandbox, rank the lines most likely at fault, and propose only "
                          "patches the tests accept (nothing in PATH changes unless --apply).")
    parser.add_argument("path", help="the project's folder")
    parser.add_argument("--test", default="pytest -q", metavar="CMD", help="the test command, run in the project's "
                        "sandboxed copy (default: pytest -q)")
    parser.add_argument("--json", action="store_true", help="print one JSON object: suspicious lines, patches")
    parser.add_argument("--apply", action="store_true", help="apply the best verified patch to PATH")
    parser.add_argument("--max-candidates", type=int, default=DEBUG_CANDIDATES, help="candidate patches tried, at "
                        f"most (default {DEBUG_CANDIDATES})")
    parser.add_argument("--max-seconds", type=float, default=DEBUG_SECONDS, help="for the whole run (default "
                        f"{DEBUG_SECONDS:g})")
    parser.add_argument("--no-model", action="store_true", help="mutation operators only: no model loaded")
    add_model_flags(parser)


def run_debug(args: argparse.Namespace) -> None:
    from apps.code_review.debug import debug
    from apps.code_review.sandbox import SandboxError

    if not Path(args.path).is_dir():
        raise InputError(f"{args.path[:200]!r} is not a folder: give the project's folder")
    llm = None
    if not args.no_model:
        from core import load

        llm = load(args.model, dtype=args.dtype, model_name=args.model_name, api_key=args.api_key)
    progress = None if args.json or not sys.stderr.isatty() else _progress
    try:
        result = debug(args.path, test_cmd=args.test, llm=llm, max_candidates=args.max_candidates,
                       max_seconds=args.max_seconds, apply=args.apply, progress=progress)
    except SandboxError as error:  # a project too big to copy, a sandbox that cannot start
        raise InputError(str(error)) from None
    data = result.to_json()
    comments = explain(llm, [patch_candidates(patch) for patch in data["patches"]]) if llm is not None else []
    for patch, comment in zip(data["patches"], comments, strict=False):
        patch["explanation"] = comment.to_json()
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
        return
    print(result.to_text())
    for number, comment in enumerate(comments, 1):
        print(f"patch {number}: {comment.explanation} {comment.fix_hint}")


def _progress(message: str) -> None:
    print(f"llmkit debug: {message}", file=sys.stderr, flush=True)
