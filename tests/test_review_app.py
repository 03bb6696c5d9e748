"""The code-review page's handlers without a server: pasted code and diffs, uploads, local folders and ranges
(only inside the operator's roots), the debugger's suspicious lines highlighted and its patches shown."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from apps.code_review.app import AppError, CodeReviewApp, highlighted, looks_like_diff, patches_markdown
from apps.code_review.explain import Explanation
from core import ScriptedModel

ROOT = Path(__file__).resolve().parent.parent
CODE = "import os\nimport subprocess\n\n\ndef run(command):\n    return subprocess.call(command, shell=True)\n"


@pytest.fixture
def app(tmp_path) -> CodeReviewApp:
    return CodeReviewApp(None, [tmp_path])


def test_pasted_code_gives_the_findings_table_and_report(app):
    view = app.review_text(CODE)
    assert [row[:5] for row in view.rows] == [["error", "snippet.py", 6, "bandit", "B602"],
                                              ["warning", "snippet.py", 1, "ruff", "F401"],
                                              ["note", "snippet.py", 2, "bandit", "B404"]]
    assert view.status.startswith("**1 error, 1 warning, 1 note in 1 file**")
    assert "No model" in view.status and "— bandit `B602`" in view.report


def test_explanations_fill_the_tables_last_column():
    model = ScriptedModel([{"explanation": 1, "fix_hint": 1}] * 5)
    view = CodeReviewApp(model, [Path.cwd()]).review_text(CODE)
    assert all(row[6] for row in view.rows) and "Explanations by `scripted`" in view.status


def test_a_pasted_diff_is_read_against_the_local_folder(app, tmp_path):
    (tmp_path / "tool.py").write_text(CODE)
    diff = "--- a/tool.py\n+++ b/tool.py\n@@ -5,2 +5,2 @@\n def run(command):\n-    pass\n+" + CODE.splitlines()[-1] \
        + "\n"
    assert looks_like_diff(diff) and not looks_like_diff(CODE)
    view = app.review_text(diff, str(tmp_path))
    assert [row[4] for row in view.rows] == ["B602"] and "on changed lines (2 more" in view.status
    assert len(app.review_text(diff, str(tmp_path), all_lines=True).rows) == 3


def test_paths_outside_the_roots_are_refused(app, tmp_path):
    with pytest.raises(AppError, match="outside the folders this page may read"):
        app.review_path(str(tmp_path.parent))
    with pytest.raises(AppError, match="outside"):
        app.review_path(str(tmp_path / ".." / ".." / "etc"))
    with pytest.raises(AppError, match="Type a local folder"):
        app.review_path("  ")


def test_a_local_folder_and_its_revision_range(app, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x",
           "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "init", "-q"], cwd=repo, env=env, check=True)
    for step, text in enumerate(("import os\n", CODE)):
        (repo / "tool.py").write_text(text)
        for command in (["git", "add", "-A"], ["git", "commit", "-qm", f"c{step}"]):
            subprocess.run(command, cwd=repo, env=env, check=True)
    assert len(app.review_path(str(repo)).rows) == 3
    assert [row[4] for row in app.review_path(str(repo), "HEAD~1..HEAD").rows] == ["B602", "B404"]
    with pytest.raises(AppError, match="is not a revision range"):
        app.review_path(str(repo), "--help")


def test_uploads_python_files_or_one_diff(app, tmp_path):
    (tmp_path / "a.py").write_text(CODE)
    (tmp_path / "b.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("hi")
    view = app.review_uploads([str(tmp_path / "a.py"), str(tmp_path / "b.py")])
    assert {row[1] for row in view.rows} == {"a.py"} and "in 2 files" in view.status
    with pytest.raises(AppError, match="neither Python"):
        app.review_uploads([str(tmp_path / "notes.txt")])
    (tmp_path / "fake.diff").write_text("not a diff\n")
    with pytest.raises(AppError, match="fake.diff is not a unified diff"):
        app.review_uploads([str(tmp_path / "fake.diff")])
    with pytest.raises(AppError, match="Upload a .py file"):
        app.review_uploads([])


def test_empty_or_bad_text_is_refused(app):
    with pytest.raises(AppError, match="the code is empty"):
        app.review_text("   ")


def test_suspicious_lines_are_highlighted_and_the_code_escaped(tmp_path):
    (tmp_path / "m.py").write_text("\n".join(f"line{n} = '<script>'" for n in range(1, 21)) + "\n")
    page = highlighted(tmp_path, [{"file": "m.py", "line": 10, "score": 0.8}, {"file": "m.py", "line": 18,
                                                                               "score": 0.4},
                                  {"file": "../outside.py", "line": 1, "score": 1.0}])
    assert page.count("cr-suspicious") == 2 and "&lt;script&gt;" in page and "<script>" not in page
    assert "<span class='cr-no'>7</span>" in page and "<span class='cr-no'>6</span>" not in page  # 3 lines around
    assert "cr-gap" not in page.split("cr-no'>13<")[0] and "outside" not in page


def test_no_patch_says_so_and_a_patch_shows_its_diff_and_tests():
    assert "**No verified patch**" in patches_markdown([], [])
    patch = {"file": "m.py", "line": 4, "diff": "-a\n+b\n", "fixed_tests": ["t.py::test_x"], "size": 1,
             "source": "mutation"}
    text = patches_markdown([patch], [Explanation("Because.", "Apply it.", "template")])
    assert "```diff\n-a\n+b\n```" in text and "`t.py::test_x`" in text and "*Because.* Apply it." in text


@pytest.mark.slow  # runs the project's tests in the sandbox, then candidate patches (~5 s)
def test_the_debug_tab_on_a_bug(tmp_path):
    shutil.copytree(ROOT / "bench" / "bugs" / "average", tmp_path / "average")
    view = CodeReviewApp(None, [tmp_path]).debug(str(tmp_path / "average"), 50, 60)
    assert view.suspicious[0][1:3] == ["module.py", 4]
    assert "1 failing test" in view.status and "Isolation:" in view.status
    assert "cr-suspicious" in view.code_html and "```diff" in view.patches
    with pytest.raises(AppError, match="outside"):
        CodeReviewApp(None, [tmp_path / "average"]).debug(str(tmp_path))
