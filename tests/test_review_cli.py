"""`llmkit review` and `llmkit debug` as a CI step or a pre-commit hook runs them: the console script in a
subprocess, on a file, a diff on stdin (diff-aware), a git range (SARIF), with exit codes by --fail-on and one
`llmkit: ...` line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from apps.cli import build_parser
from apps.code_review.cli import open_target
from apps.code_review.inputs import InputError

LLMKIT = Path(sys.executable).parent / "llmkit"
ROOT = Path(__file__).resolve().parent.parent
CODE = "import os\nimport subprocess\n\n\ndef run(command):\n    return subprocess.call(command, shell=True)\n"


def git(repo: Path, *args: str) -> str:
    identity = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@example.com", "HOME": str(repo), "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=identity).stdout.strip()


def llmkit(*args, stdin=None, cwd=None):
    return subprocess.run([str(LLMKIT), *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture
def project(tmp_path) -> Path:
    """A repository whose second commit adds the shell call (line 6) to a file that already had an unused import."""
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "tool.py").write_text("import os\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "first")
    (tmp_path / "tool.py").write_text(CODE)
    git(tmp_path, "commit", "-q", "-am", "second")
    return tmp_path


def test_a_file_as_json_and_the_exit_code_by_fail_on(project):
    done = llmkit("review", str(project / "tool.py"), "--no-model", "--json")
    assert done.returncode == 1 and done.stderr == ""  # B602 is an error
    data = json.loads(done.stdout)
    assert [(f["tool"], f["rule"], f["line"], f["severity"]) for f in data["findings"]] == [
        ("bandit", "B602", 6, "error"), ("ruff", "F401", 1, "warning"), ("bandit", "B404", 2, "note")]
    assert {run["tool"]: run["status"] for run in data["analyzers"]} == {"ruff": "ok", "bandit": "ok", "radon": "ok"}
    assert llmkit("review", str(project / "tool.py"), "--no-model", "--fail-on", "never").returncode == 0
    clean = project / "clean.py"
    clean.write_text("VALUE = 1\n")
    assert llmkit("review", str(clean), "--no-model", "--fail-on", "note").returncode == 0


def test_a_diff_on_stdin_is_reviewed_on_its_changed_lines_only(project):
    diff = git(project, "diff", "HEAD~1", "HEAD") + "\n"
    done = llmkit("review", "--diff", "-", "--no-model", "--format", "github", stdin=diff, cwd=project)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert [line.split("::")[1].split(" ")[0] for line in lines] == ["error", "notice"]  # B602 on 6, B404 on 2
    assert "line=6" in lines[0] and "title=bandit B602" in lines[0]
    every = llmkit("review", "--diff", "-", "--no-model", "--json", "--all-lines", stdin=diff, cwd=project)
    assert [f["rule"] for f in json.loads(every.stdout)["findings"]] == ["B602", "F401", "B404"]
    warnings_only = llmkit("review", "--diff", "-", "--no-model", "--fail-on", "never", stdin=diff, cwd=project)
    assert warnings_only.returncode == 0 and "1 more elsewhere in the changed files" in warnings_only.stdout


def test_a_git_range_as_sarif_to_a_file(project, tmp_path):
    out = tmp_path / "review.sarif"
    done = llmkit("review", "--git", str(project), "--range", "HEAD~1..HEAD", "--format", "sarif", "--no-model",
                  "-o", str(out))
    assert done.returncode == 1 and done.stdout == ""
    log = json.loads(out.read_text())
    assert log["version"] == "2.1.0"
    located = {(r["ruleId"], r["locations"][0]["physicalLocation"]["region"]["startLine"])
               for run in log["runs"] for r in run["results"]}
    assert located == {("B602", 6), ("B404", 2)}


@pytest.mark.parametrize("args, stdin, message", [
    ((), None, "give one of PATH, --diff FILE"),
    (("--diff", "-"), "", "the diff is empty"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, stdin, message):
    done = llmkit("review", *args, "--no-model", stdin=stdin, cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("llmkit: ") and message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("args, message", [
    (("--git", "."), "--git needs --range"),
    (("--range", "A..B", "x.py"), "--range goes with --git"),
    (("x.py", "--diff", "d"), "give one of PATH"),
    (("nowhere.py",), "'nowhere.py' does not exist"),
    (("--diff", "missing.diff"), "cannot read the diff 'missing.diff'"),
])
def test_the_flags_name_exactly_one_input(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=message):
        open_target(build_parser("review").parse_args(["review", *args]))


def test_the_pre_commit_hook_definition_runs_this_command():
    hooks = (ROOT / ".pre-commit-hooks.yaml").read_text()
    assert "entry: llmkit review --no-model" in hooks and "pass_filenames" in hooks


def test_the_debug_command_takes_its_flags_and_refuses_a_missing_folder(tmp_path):
    done = llmkit("debug", str(tmp_path / "missing"), "--no-model", "--json")
    assert done.returncode == 1 and "is not a folder" in done.stderr
    args = build_parser("debug").parse_args(["debug", ".", "--test", "python -m pytest -x", "--max-seconds", "9"])
    assert (args.test, args.max_seconds, args.max_candidates, args.apply) == ("python -m pytest -x", 9.0, 200, False)


@pytest.mark.slow  # runs a project's tests in the sandbox, and its candidate patches (~5 s)
def test_debug_prints_suspicious_lines_and_a_patch_git_apply_accepts(tmp_path):
    project = tmp_path / "average"
    project.mkdir()
    for name in ("module.py", "test_average.py"):
        (project / name).write_text((ROOT / "bench" / "bugs" / "average" / name).read_text())
    done = llmkit("debug", str(project), "--no-model", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["suspicious"][0] == {"file": "module.py", "line": 4, "score": result["suspicious"][0]["score"]}
    best = result["patches"][0]
    assert best["fixed_tests"] == ["test_average.py::test_values"]
    git(project, "init", "-q")
    check = subprocess.run(["git", "-C", str(project), "apply", "--check", "-"], input=best["diff"], text=True)
    assert check.returncode == 0
    assert "/ len(values)" not in (project / "module.py").read_text()  # nothing changed without --apply
