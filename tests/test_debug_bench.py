"""bench/code_review.py: its frozen bug set is sound (each bug fails as recorded, each reference fix passes), and its
report goes through the one results writer. Measures nothing."""

import subprocess
import sys
from pathlib import Path

import pytest

from bench import code_review, results

BUGS = code_review.manifest()


def test_the_bug_set_covers_the_operator_classes_and_records_each_buggy_line():
    assert len(BUGS) >= 30
    kinds = {bug["kind"] for bug in BUGS.values()}
    assert {"comparison", "boolean", "arithmetic", "off-by-one range", "off-by-one slice", "off-by-one index",
            "swapped arguments", "wrong variable", "missing return", "extra return", "negated condition",
            "constant"} <= kinds
    assert sum(not bug["fixable"] for bug in BUGS.values()) >= 3  # the tool must say "no verified patch" on these
    for name, bug in BUGS.items():
        folder = code_review.BUGS / name
        lines = (folder / bug["file"]).read_text().splitlines()
        fix = bug["fix"].splitlines()
        assert lines[bug["line"] - 1:bug["line"] - 1 + len(fix)] != fix and list(folder.glob("test_*.py")), name
    assert sorted(p.name for p in code_review.BUGS.iterdir() if p.is_dir()) == sorted(BUGS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BUGS))
def test_each_bug_fails_and_its_reference_fix_passes(name, tmp_path):
    bug = BUGS[name]
    project = tmp_path / name
    subprocess.run(["cp", "-r", str(code_review.BUGS / name), str(project)], check=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    environment = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    assert subprocess.run(command, cwd=project, capture_output=True, env=environment).returncode == 1
    file = project / bug["file"]
    lines = file.read_text().splitlines(keepends=True)
    lines[bug["line"] - 1] = bug["fix"] + "\n"
    file.write_text("".join(lines))
    fixed = subprocess.run(command, cwd=project, capture_output=True, env=environment).returncode
    assert fixed == (0 if bug["fixable"] or name != "min_max" else 1)  # min_max's other buggy line stays


def test_the_report_goes_through_the_results_writer(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench/code_review.py"])
    rows = [{"bug": "a", "kind": "comparison", "fixable": True, "rank": 1, "patches": 2, "wrong": 0,
             "best": "comparison", "reference_fix": True, "tried": 5, "stopped": None, "problem": None, "seconds": 2.0},
            {"bug": "b", "kind": "string", "fixable": False, "rank": 4, "patches": 0, "wrong": 0, "best": None,
             "reference_fix": False, "tried": 9, "stopped": "seconds", "problem": None, "seconds": 6.0}]
    summary = code_review.summary(rows)
    assert (summary["top1"], summary["top3"], summary["repaired"], summary["repaired_fixable"]) == (0.5, 0.5, 0.5, 1.0)
    assert summary["wrong_patches"] == 0 and summary["seconds_per_bug"] == 4.0
    text = results.write("code_review", "t", code_review.markdown(rows, summary, "setup"), {"summary": summary},
                         tmp_path)
    assert "| 2 | 50% | 50% | 50% (expected-fixable: 100%) | 50% | 0 | 4.0 | 6.0 |" in text
    assert "| b | string | no | 4 | 0 | no verified patch | no | 0 | 9 (budget) | 6.0 |" in text
    assert Path(tmp_path / "code_review.json").exists()
