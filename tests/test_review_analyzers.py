"""Each analyzer on a file with known issues, normalised to Finding; a missing, crashing or hanging analyzer is
reported and the others go on; diff-awareness keeps the findings on changed lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from apps.code_review import analyzers
from apps.code_review.analyzers import (
    AnalyzerRun,
    Finding,
    on_changed_lines,
    ordered,
    parse_mypy,
    parse_radon,
    rule_docs,
    run_analyzers,
)

BAD = '''import os
import subprocess


def run(command):
    return subprocess.call(command, shell=True)


def branchy(a, b, c):
    if a:
        return undefined_name
    if b:
        return 2
    if c:
        return 3
    return 4
'''


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, AnalyzerRun]:
    root = tmp_path_factory.mktemp("bad")
    (root / "bad.py").write_text(BAD)
    (root / "broken.py").write_text("def f(:\n")
    return {run.tool: run for run in run_analyzers(root, ["bad.py", "broken.py"], complexity=3)}


def keyed(run: AnalyzerRun) -> set[tuple]:
    return {(f.file, f.line, f.rule, f.severity, f.tool) for f in run.findings}


def test_ruff_findings_syntax_errors_and_undefined_names_are_errors(runs):
    assert runs["ruff"].status == "ok"
    assert {("bad.py", 1, "F401", "warning", "ruff"), ("bad.py", 11, "F821", "error", "ruff"),
            ("broken.py", 1, "invalid-syntax", "error", "ruff")} <= keyed(runs["ruff"])
    unused = next(f for f in runs["ruff"].findings if f.rule == "F401")
    assert unused.message.startswith("`os` imported but unused") and "(fix: Remove unused import" in unused.message
    assert unused.column == 8 and unused.url.startswith("https://docs.astral.sh/ruff/rules/")


def test_bandit_severities_map_high_to_error_low_to_note_and_unparsable_files_are_noted(runs):
    assert runs["bandit"].status == "ok"
    assert {("bad.py", 6, "B602", "error", "bandit"), ("bad.py", 2, "B404", "note", "bandit")} <= keyed(runs["bandit"])
    assert "broken.py" in runs["bandit"].message


def test_radon_reports_blocks_above_the_threshold_as_notes(runs):
    assert keyed(runs["radon"]) == {("bad.py", 9, "cyclomatic-complexity", "note", "radon")}
    finding = runs["radon"].findings[0]
    assert finding.end_line == 16 and "`branchy` has cyclomatic complexity 4" in finding.message
    assert "broken.py" in runs["radon"].message


def test_radon_s_json_with_a_method_and_an_error():
    output = ('{"m.py": [{"type": "method", "rank": "C", "complexity": 12, "name": "go", "classname": "K", '
              '"lineno": 3, "endline": 30, "col_offset": 4}, {"type": "function", "rank": "A", "complexity": 2, '
              '"name": "easy", "lineno": 40, "endline": 41, "col_offset": 0}], "bad.py": {"error": "invalid syntax"}}')
    findings, note = parse_radon(output, Path("/r"))
    assert [(f.file, f.line, f.end_line, f.column) for f in findings] == [("m.py", 3, 30, 5)]
    assert "`K.go` has cyclomatic complexity 12 (rank C" in findings[0].message and "bad.py" in note


def test_mypy_s_lines_become_errors_and_its_notes_are_left_out():
    output = ("m.py:4:12: error: Incompatible return value type (got \"str\", expected \"int\")  [return-value]\n"
              "m.py:4:12: note: See https://mypy.rtfd.io\nsub/n.py:7: error: Name \"x\" is not defined  "
              "[name-defined]\n")
    findings = parse_mypy(output, Path("/r"))
    assert [(f.file, f.line, f.column, f.rule, f.severity) for f in findings] == [
        ("m.py", 4, 12, "return-value", "error"), ("sub/n.py", 7, None, "name-defined", "error")]


def test_mypy_runs_only_when_installed(runs):
    assert ("mypy" in runs) == analyzers.installed("mypy")


def test_a_missing_analyzer_is_reported_not_fatal(tmp_path, monkeypatch):
    (tmp_path / "m.py").write_text("import os\n")
    real = analyzers.installed
    monkeypatch.setattr(analyzers, "installed", lambda tool: tool != "bandit" and real(tool))
    runs = {run.tool: run for run in run_analyzers(tmp_path, ["m.py"], ("ruff", "bandit"))}
    assert runs["bandit"].status == "missing" and "pip install bandit" in runs["bandit"].message
    assert runs["ruff"].status == "ok" and runs["ruff"].findings


def test_a_crashing_or_hanging_analyzer_is_reported_not_fatal(tmp_path):
    (tmp_path / "m.py").write_text("a = 1\n")
    crashed = analyzers._execute("ruff", ["check", "--no-such-flag"], tmp_path, 30, (0,), lambda out: ([], ""))
    assert crashed.status == "failed" and "exited with status 2" in crashed.message
    nonsense = analyzers._execute("ruff", ["--version"], tmp_path, 30, (0,),
                                  lambda out: (analyzers.parse_ruff(out, tmp_path), ""))
    assert nonsense.status == "failed" and "could not be read" in nonsense.message
    hung = analyzers._execute("timeit", ["import time; time.sleep(30)"], tmp_path, 0.5, (0,), lambda out: ([], ""))
    assert hung.status == "timeout" and "0.5 s" in hung.message and hung.seconds < 10


def test_the_projects_own_ruff_settings_apply(tmp_path):
    (tmp_path / "m.py").write_text("x = 1  \n")  # W291 trailing whitespace: not in ruff's default rules
    assert not run_analyzers(tmp_path, ["m.py"], ("ruff",))[0].findings
    (tmp_path / "pyproject.toml").write_text('[tool.ruff.lint]\nselect = ["W"]\n')
    assert [f.rule for f in run_analyzers(tmp_path, ["m.py"], ("ruff",))[0].findings] == ["W291"]


def test_an_unknown_analyzer_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown analyzer 'pylint'"):
        run_analyzers(tmp_path, ["m.py"], ("pylint",))


def finding(file="m.py", line=1, end_line=None, severity="warning", rule="X1") -> Finding:
    return Finding(file, line, end_line or line, rule, severity, "msg", "ruff")


def test_only_findings_touching_changed_lines_are_kept():
    inside = finding(line=5)
    elsewhere = finding(line=9)
    spanning = finding(line=1, end_line=20, rule="cc")  # a function the change is inside
    other_file = finding(file="n.py", line=5)
    kept = on_changed_lines([inside, elsewhere, spanning, other_file], {"m.py": {5, 6}})
    assert kept == [inside, spanning]
    assert on_changed_lines([inside, elsewhere], None) == [inside, elsewhere]


def test_findings_are_ordered_most_severe_first():
    note, error, warning = finding(severity="note"), finding(severity="error", line=9), finding(severity="warning")
    assert ordered([note, error, warning]) == [error, warning, note]


def test_the_rules_documentation_comes_from_the_tools():
    docs = {**rule_docs("ruff", {"F401", "not a rule"}), **rule_docs("bandit", {"B602"})}
    assert set(docs) == {"F401", "B602"}
    assert "## Why is this bad?" in docs["F401"] and "shell injection" in docs["B602"]


def test_analyzers_run_under_this_python():
    done = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("ruff ")
