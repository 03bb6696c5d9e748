"""A review written out: SARIF 2.1.0 that validates against the schema's structure, GitHub annotation lines with
their escaping, Markdown with each comment beside its tool and rule, JSON, and exit codes by severity."""

from __future__ import annotations

import json

import jsonschema
import pytest

from apps.code_review.analyzers import AnalyzerRun, Finding
from apps.code_review.explain import Explanation
from apps.code_review.report import exit_code, github, markdown, render, sarif
from apps.code_review.review import Review

# The part of the SARIF 2.1.0 schema (https://json.schemastore.org/sarif-2.1.0.json, OASIS SARIF v2.1.0 section 3)
# that our logs use: its required properties, value types and enums, with additionalProperties closed as the
# full schema closes them, so a misspelt property fails too.
_MESSAGE = {"type": "object", "anyOf": [{"required": ["text"]}, {"required": ["id"]}],
            "properties": {"text": {"type": "string"}, "markdown": {"type": "string"}, "id": {"type": "string"}},
            "additionalProperties": False}
_POSITIVE = {"type": "integer", "minimum": 1}
SARIF_SUBSET = {
    "type": "object", "required": ["version", "runs"], "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string", "format": "uri"}, "version": {"enum": ["2.1.0"]},
        "runs": {"type": "array", "items": {
            "type": "object", "required": ["tool"], "additionalProperties": False,
            "properties": {
                "tool": {"type": "object", "required": ["driver"], "additionalProperties": False, "properties": {
                    "driver": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
                        "name": {"type": "string"}, "informationUri": {"type": "string", "format": "uri"},
                        "rules": {"type": "array", "items": {
                            "type": "object", "required": ["id"], "additionalProperties": False,
                            "properties": {"id": {"type": "string"},
                                           "helpUri": {"type": "string", "format": "uri"}}}}}}}},
                "invocations": {"type": "array", "items": {
                    "type": "object", "required": ["executionSuccessful"], "additionalProperties": False,
                    "properties": {"executionSuccessful": {"type": "boolean"},
                                   "toolExecutionNotifications": {"type": "array", "items": {
                                       "type": "object", "required": ["message"], "additionalProperties": False,
                                       "properties": {"message": _MESSAGE,
                                                      "level": {"enum": ["none", "note", "warning", "error"]}}}}}}},
                "columnKind": {"enum": ["utf16CodeUnits", "unicodeCodePoints"]},
                "results": {"type": "array", "items": {
                    "type": "object", "required": ["message"], "additionalProperties": False,
                    "properties": {
                        "ruleId": {"type": "string"}, "ruleIndex": {"type": "integer", "minimum": -1},
                        "level": {"enum": ["none", "note", "warning", "error"]}, "message": _MESSAGE,
                        "properties": {"type": "object"},
                        "locations": {"type": "array", "items": {
                            "type": "object", "additionalProperties": False, "properties": {"physicalLocation": {
                                "type": "object", "additionalProperties": False, "properties": {
                                    "artifactLocation": {"type": "object", "additionalProperties": False,
                                                         "properties": {"uri": {"type": "string"},
                                                                        "uriBaseId": {"type": "string"}}},
                                    "region": {"type": "object", "additionalProperties": False, "properties": {
                                        "startLine": _POSITIVE, "endLine": _POSITIVE,
                                        "startColumn": _POSITIVE}}}}}}}}}}}}}},
}

FINDINGS = [
    Finding("pkg/a b.py", 6, 6, "B602", "error", "subprocess call with shell=True, 100%: a,b", "bandit", 12,
            "https://bandit.readthedocs.io/en/latest/plugins/b602.html"),
    Finding("pkg/m.py", 1, 1, "F401", "warning", "`os` imported but unused | <b>", "ruff", 8,
            "https://docs.astral.sh/ruff/rules/unused-import"),
    Finding("pkg/m.py", 9, 16, "cyclomatic-complexity", "note", "function `f` has cyclomatic complexity 12", "radon"),
]
EXPLAINED = Explanation("Unused imports add overhead.", "Remove unused import: `os`.", "model-chosen")


def review_of(findings: list[Finding], explanations=None, runs=None) -> Review:
    runs = runs or [AnalyzerRun(tool, "ok", 0.1, [f for f in findings if f.tool == tool])
                    for tool in ("ruff", "bandit", "radon")]
    return Review("diff", ["pkg/a b.py", "pkg/m.py"], findings, runs, explanations or [], diff_aware=True, hidden=2)


def test_sarif_validates_against_the_2_1_0_structure():
    failed = AnalyzerRun("mypy", "failed", 0.1, message="mypy exited with status 2: boom")
    log = sarif(review_of(FINDINGS, [None, EXPLAINED, None], runs=[*review_of(FINDINGS).runs, failed]))
    jsonschema.validate(log, SARIF_SUBSET, format_checker=jsonschema.FormatChecker())
    runs = {run["tool"]["driver"]["name"]: run for run in log["runs"]}
    assert set(runs) == {"ruff", "bandit", "radon", "mypy"}
    result = runs["ruff"]["results"][0]
    assert runs["ruff"]["tool"]["driver"]["rules"][result["ruleIndex"]]["id"] == result["ruleId"] == "F401"
    assert result["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "pkg/m.py", "uriBaseId": "%SRCROOT%"},
        "region": {"startLine": 1, "endLine": 1, "startColumn": 8}}
    assert result["properties"]["explanation"] == EXPLAINED.explanation
    assert runs["mypy"]["invocations"] == [{"executionSuccessful": False, "toolExecutionNotifications": [
        {"message": {"text": "mypy exited with status 2: boom"}, "level": "error"}]}]


def test_the_subset_schema_catches_what_it_should():
    log = sarif(review_of(FINDINGS))
    log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(log, SARIF_SUBSET)


def test_github_lines_escape_properties_and_data():
    lines = github(review_of(FINDINGS, [EXPLAINED, None, None])).splitlines()
    assert lines[0] == ("::error file=pkg/a b.py,line=6,endLine=6,col=12,title=bandit B602::subprocess call with "
                        "shell=True, 100%25: a,b%0AUnused imports add overhead.%0AFix: Remove unused import: `os`.")
    assert lines[2] == ("::notice file=pkg/m.py,line=9,endLine=16,title=radon cyclomatic-complexity::function `f` "
                        "has cyclomatic complexity 12")
    tricky = Finding("a,b:c.py", 1, 1, "X", "warning", "line\nbreak", "ruff")
    assert github(review_of([tricky])) == "::warning file=a%2Cb%3Ac.py,line=1,endLine=1,title=ruff X::line%0Abreak\n"


def test_markdown_puts_each_comment_under_its_finding_with_tool_and_rule():
    text = markdown(review_of(FINDINGS, [None, EXPLAINED, None]))
    assert "**1 error, 1 warning, 1 note on changed lines (2 more elsewhere in the changed files" in text
    assert ("- 🟠 **warning** `pkg/m.py:1` `os` imported but unused \\| &lt;b> — ruff `F401`\n"
            "  - *Why (ruff F401):* Unused imports add overhead.\n  - *Fix:* Remove unused import: `os`.") in text
    assert "| ruff | ok | 1 | 0.10 |" in text


def test_json_holds_the_findings_their_explanations_and_the_analyzers():
    data = json.loads(render(review_of(FINDINGS, [None, EXPLAINED, None]), "json"))
    assert [f["rule"] for f in data["findings"]] == ["B602", "F401", "cyclomatic-complexity"]
    assert data["findings"][1]["explanation"] == {"explanation": "Unused imports add overhead.",
                                                  "fix_hint": "Remove unused import: `os`.", "source": "model-chosen"}
    assert "explanation" not in data["findings"][0]
    assert {run["tool"]: run["findings"] for run in data["analyzers"]} == {"ruff": 1, "bandit": 1, "radon": 1}


@pytest.mark.parametrize("severities, fail_on, code", [
    (["error"], "error", 1), (["warning", "note"], "error", 0), (["warning"], "warning", 1), (["note"], "warning", 0),
    (["note"], "note", 1), ([], "note", 0), (["error"], "never", 0)])
def test_exit_code_by_severity(severities, fail_on, code):
    findings = [Finding("m.py", 1, 1, "X", severity, "m", "ruff") for severity in severities]
    assert exit_code(review_of(findings), fail_on) == code


def test_bad_format_and_threshold_are_clear_errors():
    with pytest.raises(ValueError, match="choose from markdown"):
        render(review_of([]), "html")
    with pytest.raises(ValueError, match="choose from note"):
        exit_code(review_of([]), "fatal")
