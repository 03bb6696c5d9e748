"""What `llmkit review` reads: a file, a folder (git's files in a work tree), a unified diff's changed lines, a
git revision range exported at its end, and the input it refuses with a clear message."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from apps.code_review import inputs
from apps.code_review.inputs import InputError, changed_lines, from_code, from_diff, from_git, from_path, from_paths


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@example.com", "HOME": str(repo), "PATH": "/usr/bin:/bin"}
                          ).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository with two commits: the second changes line 3 of a.py, adds b.py, deletes gone.py and
    touches a README."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "a.py").write_text("x = 1\ny = 2\nz = 3\n")
    (repo / "gone.py").write_text("print('bye')\n")
    (repo / "pyproject.toml").write_text("[tool.ruff]\nline-length = 100\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    (repo / "a.py").write_text("x = 1\ny = 2\nz = undefined\n")
    (repo / "b.py").write_text("import os\n")
    (repo / "README").write_text("hello\n")
    (repo / "gone.py").unlink()
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "second")
    return repo


def test_a_file_is_reviewed_from_its_folder(tmp_path):
    (tmp_path / "m.py").write_text("a = 1\n")
    target = from_path(tmp_path / "m.py")
    assert (target.root, target.files, target.changed) == (tmp_path.resolve(), ["m.py"], None)


def test_a_folder_skips_virtualenvs_caches_and_hidden_folders(tmp_path):
    for name in ("pkg/m.py", "pkg/sub/n.py", ".venv/lib/x.py", "node_modules/y.py", ".hidden/z.py",
                 "pkg/__pycache__/c.py", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("a = 1\n")
    assert from_path(tmp_path).files == ["pkg/m.py", "pkg/sub/n.py"]


def test_a_work_tree_gives_the_files_git_tracks_or_would_track(repo):
    (repo / ".gitignore").write_text("ignored.py\n")
    (repo / "ignored.py").write_text("a = 1\n")
    (repo / "new.py").write_text("a = 1\n")
    assert from_path(repo).files == ["a.py", "b.py", "new.py"]


def test_big_files_are_skipped_with_a_note_and_too_many_files_refused(tmp_path, monkeypatch):
    (tmp_path / "big.py").write_text("a = 1\n" * 10)
    (tmp_path / "small.py").write_text("a = 1\n")
    monkeypatch.setattr(inputs, "MAX_FILE_BYTES", 20)
    target = from_path(tmp_path)
    assert target.files == ["small.py"] and "big.py: skipped, 60 bytes" in target.notes[0]
    monkeypatch.setattr(inputs, "MAX_FILES", 1)
    with pytest.raises(InputError, match="more than 1 Python files"):
        from_path(tmp_path)


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.py", "does not exist"),
    (lambda p: (p / "notes.txt").write_text("x") and p / "notes.txt", "is not a Python file"),
    (lambda p: p, "holds no Python file"),
])
def test_bad_paths_are_refused_with_what_to_give(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        from_path(make(tmp_path))


DIFF = """diff --git a/pkg/m.py b/pkg/m.py
index 1111111..2222222 100644
--- a/pkg/m.py
+++ b/pkg/m.py
@@ -1,4 +1,5 @@
 import os
-x = 1
+x = 2
+-- not a header: an added line
 y = 3

@@ -10,2 +11,2 @@ def f():
     return 1
+    # new
-- removed, not a header
diff --git a/old.py b/old.py
deleted file mode 100644
--- a/old.py
+++ /dev/null
@@ -1 +0,0 @@
-gone = 1
diff --git a/new.py b/new.py
new file mode 100644
--- /dev/null
+++ b/new.py
@@ -0,0 +1,2 @@
+a = 1
+b = 2
\\ No newline at end of file
"""


def test_changed_lines_are_the_new_sides_added_lines():
    assert changed_lines(DIFF) == {"pkg/m.py": {2, 3, 12}, "new.py": {1, 2}}


def test_changed_lines_of_a_diff_without_prefixes_and_of_diff_u():
    plain = "--- m.py\t2024-01-01\n+++ m.py\t2024-01-02\n@@ -3 +3 @@\n-a\n+b\n"
    assert changed_lines(plain) == {"m.py": {3}}
    quoted = '--- "a/caf\\303\\251.py"\n+++ "b/caf\\303\\251.py"\n@@ -0,0 +1 @@\n+x\n'
    assert changed_lines(quoted) == {"café.py": {1}}


def test_a_diff_is_read_against_its_root_and_keeps_paths_inside_it(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("import os\n" * 20)
    escaping = "--- a/../outside.py\n+++ b/../outside.py\n@@ -0,0 +1 @@\n+x\n"
    target = from_diff(DIFF + escaping, tmp_path)
    assert target.files == ["pkg/m.py"] and target.changed == {"pkg/m.py": {2, 3, 12}}
    assert any("new.py: skipped, not found" in note for note in target.notes)
    assert any("../outside.py: skipped, the path leaves the root" in note for note in target.notes)


@pytest.mark.parametrize("text, message", [("", "the diff is empty"), ("hello\nworld\n", "not a unified diff")])
def test_bad_diffs_are_refused(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        from_diff(text, tmp_path)


def test_a_range_is_exported_at_its_end_with_the_changed_lines(repo):
    first = git(repo, "rev-parse", "HEAD~1")
    with from_git(repo, f"{first}..HEAD") as target:
        assert sorted(target.files) == ["a.py", "b.py"]
        assert target.changed == {"a.py": {3}, "b.py": {1}}
        assert (target.root / "a.py").read_text() == "x = 1\ny = 2\nz = undefined\n"
        assert (target.root / "pyproject.toml").exists()  # the project's tool settings go along
        root = target.root
    assert not root.exists()  # the export is removed
    with from_git(repo, "HEAD~1") as single, from_git(repo, "HEAD~1...main") as merge_base:
        assert single.changed == merge_base.changed == {"a.py": {3}, "b.py": {1}}


@pytest.mark.parametrize("revisions, message", [("nope..HEAD", "is not a commit"), ("--output=x", "not a revision"),
                                                ("HEAD~1..$(id)", "not a revision")])
def test_bad_ranges_are_refused(repo, revisions, message):
    with pytest.raises(InputError, match=message):
        from_git(repo, revisions)


def test_a_folder_that_is_no_repository_is_refused(tmp_path):
    with pytest.raises(InputError, match="not a git repository"):
        from_git(tmp_path, "HEAD~1..HEAD")


def test_pasted_code_lives_in_a_temporary_root():
    with from_code("print(1)\n") as target:
        assert (target.root / "snippet.py").read_text() == "print(1)\n"
        root = target.root
    assert not root.exists()
    with pytest.raises(InputError, match="empty"):
        from_code("  \n")


def test_several_files_are_reviewed_from_the_folder_holding_them(tmp_path):
    for name in ("a/x.py", "a/b/y.py", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("v = 1\n")
    target = from_paths([tmp_path / "a/b/y.py", tmp_path / "a/x.py"])
    assert (target.root, target.files) == ((tmp_path / "a").resolve(), ["b/y.py", "x.py"])
    with pytest.raises(InputError, match="is not a Python file"):
        from_paths([tmp_path / "a/x.py", tmp_path / "notes.txt"])


def test_a_range_with_unusual_file_names(repo):
    (repo / "we ird[1]*.py").write_text("import os\n")
    (repo / "caf\u00e9.py").write_text("x = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "third")
    with from_git(repo, "HEAD~1..HEAD") as target:
        assert sorted(target.files) == ["caf\u00e9.py", "we ird[1]*.py"]
        assert (target.root / "we ird[1]*.py").read_text() == "import os\n"
