"""A review written out: Markdown (for people and PR comments), JSON (for scripts), SARIF 2.1.0 (for code-scanning
UIs: one run per analyzer) and GitHub workflow annotation lines (`::error file=...,line=...::message`), and the exit
status a CI step or pre-commit hook goes by.

Each comment is printed with its tool and rule beside it, under the finding it explains; a finding's message is the
tool's own. Text from the reviewed code (names in messages, file names) is escaped for each format: table cells and
backticks in Markdown, GitHub's %-encoding in annotations, JSON's own escaping elsewhere.

Does not: post to a pull request (CI uploads the SARIF file, or prints the annotation lines).
"""

from __future__ import annotations

import json

from apps.code_review.analyzers import SEVERITIES, at_least
from apps.code_review.review import Review

FORMATS = ("markdown", "json", "sarif", "github")
FAIL_ON = (*SEVERITIES, "never")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
TOOL_URLS = {"ruff": "https://docs.astral.sh/ruff/", "bandit": "https://bandit.readthedocs.io/",
             "radon": "https://radon.readthedocs.io/", "mypy": "https://mypy.readthedocs.io/"}
GITHUB_LEVELS = {"error": "error", "warning": "warning", "note": "notice"}
ICONS = {"error": "🔴", "warning": "🟠", "note": "🔵"}


def exit_code(review: Review, fail_on: str = "error") -> int:
    """1 when a finding is at or above `fail_on` (a severity, or "never"), else 0."""
    if fail_on not in FAIL_ON:
        raise ValueError(f"--fail-on {fail_on!r}: choose from {', '.join(FAIL_ON)}")
    if fail_on == "never":
        return 0
    return int(any(at_least(f.severity, fail_on) for f in review.findings))


def render(review: Review, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(review.to_json(), indent=2, ensure_ascii=False)
    if fmt == "sarif":
        return json.dumps(sarif(review), indent=2, ensure_ascii=False)
    return github(review) if fmt == "github" else markdown(review)


# --- Markdown ---------------------------------------------------------------------------------------------------------

def _md(text: str) -> str:
    """Tool text in a Markdown line: one line, no HTML, table pipes escaped."""
    return " ".join(str(text).split()).replace("<", "&lt;").replace("|", "\\|")


def summary(review: Review) -> str:
    counts = {s: sum(f.severity == s for f in review.findings) for s in reversed(SEVERITIES)}
    found = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items() if n) or "no findings"
    scope = (f" on changed lines ({review.hidden} more elsewhere in the changed files; --all-lines shows them)"
             if review.diff_aware and review.hidden else " on changed lines" if review.diff_aware else "")
    return f"{found}{scope} in {len(review.files)} file{'s' if len(review.files) != 1 else ''}"


def markdown(review: Review) -> str:
    lines = [f"## Code review: {_md(review.description)}", "", f"**{summary(review)}**", ""]
    for finding, comment in zip(review.findings, review.explanations, strict=True):
        where = f"`{_md(finding.file)}:{finding.line}`"
        lines.append(f"- {ICONS[finding.severity]} **{finding.severity}** {where} {_md(finding.message)} "
                     f"— {finding.tool} `{_md(finding.rule)}`")
        if comment is not None:
            lines.append(f"  - *Why ({finding.tool} {_md(finding.rule)}):* {_md(comment.explanation)}")
            lines.append(f"  - *Fix:* {_md(comment.fix_hint)}")
    lines += ["", "| analyzer | status | findings | seconds |", "|---|---|---|---|"]
    for run in review.runs:
        status = run.status + (f": {_md(run.message)[:200]}" if run.message else "")
        lines.append(f"| {run.tool} | {status} | {len(run.findings)} | {run.seconds:.2f} |")
    lines += [f"- {_md(note)}" for note in review.notes[:20]]
    return "\n".join(lines) + "\n"


# --- SARIF 2.1.0 ------------------------------------------------------------------------------------------------------

def sarif(review: Review) -> dict:
    """A SARIF 2.1.0 log: one run per analyzer that ran, its rules, results and whether it succeeded; file URIs
    relative to %SRCROOT% (the reviewed root)."""
    runs = []
    for run in review.runs:
        findings = [(f, e) for f, e in zip(review.findings, review.explanations, strict=True) if f.tool == run.tool]
        rules: dict[str, dict] = {}
        for finding, _ in findings:
            rule = rules.setdefault(finding.rule, {"id": finding.rule})
            if finding.url:
                rule["helpUri"] = finding.url
        index = {rule: i for i, rule in enumerate(rules)}
        results = []
        for finding, comment in findings:
            region = {"startLine": finding.line, "endLine": finding.end_line}
            if finding.column:
                region["startColumn"] = finding.column
            result = {"ruleId": finding.rule, "ruleIndex": index[finding.rule], "level": finding.severity,
                      "message": {"text": finding.message},
                      "locations": [{"physicalLocation": {
                          "artifactLocation": {"uri": finding.file, "uriBaseId": "%SRCROOT%"}, "region": region}}]}
            if comment is not None:
                result["properties"] = {"explanation": comment.explanation, "fixHint": comment.fix_hint,
                                        "explanationSource": comment.source}
            results.append(result)
        invocation = {"executionSuccessful": run.status == "ok"}
        if run.message:
            invocation["toolExecutionNotifications"] = [{"message": {"text": run.message},
                                                         "level": "note" if run.status == "ok" else "error"}]
        driver = {"name": run.tool, **({"informationUri": TOOL_URLS[run.tool]} if run.tool in TOOL_URLS else {}),
                  "rules": list(rules.values())}
        runs.append({"tool": {"driver": driver},
                     "invocations": [invocation], "results": results, "columnKind": "unicodeCodePoints"})
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": runs}


# --- GitHub annotations -----------------------------------------------------------------------------------------------

def _escape_data(text: str) -> str:
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github(review: Review) -> str:
    """One workflow command per finding (GitHub shows it on the pull request's line), the explanation after the
    tool's message."""
    lines = []
    for finding, comment in zip(review.findings, review.explanations, strict=True):
        properties = (f"file={_escape_property(finding.file)},line={finding.line},endLine={finding.end_line}"
                      + (f",col={finding.column}" if finding.column else "")
                      + f",title={_escape_property(f'{finding.tool} {finding.rule}')}")
        message = finding.message + (f"\n{comment.explanation}\nFix: {comment.fix_hint}" if comment else "")
        lines.append(f"::{GITHUB_LEVELS[finding.severity]} {properties}::{_escape_data(message)}")
    return "\n".join(lines) + ("\n" if lines else "")
