"""What `llmkit review` reads: a file, a folder, a unified diff (a file's text or stdin's) or a git revision range,
as the Python files to analyse and, for a diff or a range, the lines each one changed.

A `Target` names files relative to its `root`, the directory the analyzers run in (so a project's own ruff
settings apply). For a diff, the files are read from `root` (default: the current directory), which holds the diff's
new side, as in a pre-commit hook or a CI checkout; for a range A..B, the changed files are exported at B into a
temporary folder with the repository's tool configuration. Changed lines are the added lines of the new side; a
diff that only deletes lines changes none.

Everything here is untrusted text (a diff's file names, a repository's paths): names are kept inside `root`
(absolute paths, `..` and symlinks out of it are refused), sizes and counts are bounded before anything is read,
and git runs as a subprocess with the revisions resolved first (`--end-of-options`), never through a shell.
Bad input raises InputError, whose message says what to give instead.

Does not: apply a diff, fetch from remotes, or read files other than Python ones (`.py`, `.pyi`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MAX_FILES = 2000  # Python files reviewed at once; a bigger tree is refused with the count
MAX_FILE_BYTES = 1_000_000  # a larger file is skipped, with a note
MAX_DIFF_BYTES = 10_000_000
GIT_SECONDS = 60
PYTHON_SUFFIXES = (".py", ".pyi")
SKIPPED_DIRS = {".git", ".hg", ".svn", ".venv", "venv", "env", ".tox", ".nox", "node_modules", "__pycache__",
                "build", "dist", ".mypy_cache", ".ruff_cache", ".pytest_cache", "site-packages"}
# The tool configuration a range's export takes along, so the analyzers judge B as the project does.
CONFIG_FILES = ("pyproject.toml", "ruff.toml", ".ruff.toml", "setup.cfg", "tox.ini", ".bandit", "mypy.ini")
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_REVISION = re.compile(r"^[\w./~^@{}:+-]{1,200}$")


class InputError(ValueError):
    """Input `llmkit review` cannot read: the message says what was wrong and what to give."""


@dataclass
class Target:
    """The Python files to review, relative to `root` (POSIX form); `changed[file]` the line numbers the diff or
    range changed in it (None: review every line); `notes` what was skipped and why. `close()` removes a
    temporary root (a range's export, pasted code)."""

    root: Path
    files: list[str]
    changed: dict[str, set[int]] | None = None
    notes: list[str] = field(default_factory=list)
    description: str = ""
    _temporary: tempfile.TemporaryDirectory | None = None

    def close(self) -> None:
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- files and folders ------------------------------------------------------------------------------------------------

def from_path(path: str | Path) -> Target:
    """A Python file (root: its folder) or a folder (root: itself; in a git work tree the files git tracks or would
    track, otherwise every Python file outside SKIPPED_DIRS and hidden folders)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{str(path)[:200]!r} does not exist: give a Python file, a folder, --diff FILE or --git REPO")
    if path.is_file():
        if path.suffix not in PYTHON_SUFFIXES:
            raise InputError(f"{path.name[:100]!r} is not a Python file (.py): give a .py file or a folder, or a "
                             "diff with --diff")
        root = path.resolve().parent
        return _bounded(Target(root, [path.name], description=f"file {path.name}"))
    root = path.resolve()
    names = _git_files(root)
    if names is None:
        names = _walk(root)
    return _bounded(Target(root, names, description=f"folder {root.name or root}"))


def from_paths(paths: list[str | Path]) -> Target:
    """One path as `from_path`; several (a pre-commit hook's staged files) must be Python files, reviewed from the
    folder that holds them all."""
    if len(paths) == 1:
        return from_path(paths[0])
    files = [Path(path).expanduser() for path in paths]
    for path in files:
        if not path.is_file() or path.suffix not in PYTHON_SUFFIXES:
            raise InputError(f"{str(path)[:200]!r} is not a Python file: give several .py files, or one folder")
    root = Path(os.path.commonpath([path.resolve().parent for path in files]))
    names = sorted({path.resolve().relative_to(root).as_posix() for path in files})
    return _bounded(Target(root, names, description=f"{len(names)} files"))


def from_code(code: str, name: str = "snippet.py") -> Target:
    """Pasted code as one file in a temporary root (removed by `close()`)."""
    if not code.strip():
        raise InputError("the code is empty: paste some Python")
    encoded = code.encode("utf-8", "replace")
    if len(encoded) > MAX_FILE_BYTES:
        raise InputError(f"the code has {len(encoded):,} bytes; the limit is {MAX_FILE_BYTES:,}")
    temporary = tempfile.TemporaryDirectory(prefix="llmkit-review-")
    safe = PurePosixPath(name).name if PurePosixPath(name).suffix in PYTHON_SUFFIXES else "snippet.py"
    (Path(temporary.name) / safe).write_bytes(encoded)
    return Target(Path(temporary.name), [safe], description="pasted code", _temporary=temporary)


def _walk(root: Path) -> list[str]:
    names = []
    for folder, dirs, files in os.walk(root):  # os.walk does not follow symlinked folders
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(files):
            full = Path(folder, name)
            if name.endswith(PYTHON_SUFFIXES) and not full.is_symlink():
                names.append(full.relative_to(root).as_posix())
                if len(names) > MAX_FILES:
                    return names  # _bounded refuses it; no need to walk further
    return names


def _git_files(root: Path) -> list[str] | None:
    """The Python files git tracks or would track (not ignored) under `root`; None outside a work tree."""
    if shutil.which("git") is None or not _git(root, "rev-parse", "--is-inside-work-tree", check=False).strip():
        return None
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *(
        f"*{suffix}" for suffix in PYTHON_SUFFIXES))
    names = []
    for name in sorted(set(filter(None, listed.split("\0")))):
        full = root / name
        if full.is_file() and not full.is_symlink():  # a deleted tracked file is still listed
            names.append(PurePosixPath(name).as_posix())
    return names


def _bounded(target: Target) -> Target:
    """The target without files over MAX_FILE_BYTES (noted); InputError for more than MAX_FILES files or none."""
    if len(target.files) > MAX_FILES:
        raise InputError(f"{target.description} holds more than {MAX_FILES} Python files: review a smaller folder, "
                         "or a diff or revision range")
    kept = []
    for name in target.files:
        size = (target.root / name).stat().st_size
        if size > MAX_FILE_BYTES:
            target.notes.append(f"{name}: skipped, {size:,} bytes (the limit is {MAX_FILE_BYTES:,})")
        else:
            kept.append(name)
    target.files = kept
    if not kept and target.changed is None:
        raise InputError(f"{target.description} holds no Python file to review")
    return target


# --- diffs ------------------------------------------------------------------------------------------------------------

def changed_lines(diff: str) -> dict[str, set[int]]:
    """The new side's added line numbers per file of a unified diff (git's, with or without a/ b/ prefixes, or
    diff -u's); deleted files are left out, a file whose hunks only delete is present with no lines. Inside a hunk
    the header's line counts decide what is content, so a removed line that reads "-- x" is not a file header."""
    changed: dict[str, set[int]] = {}
    current: set[int] | None = None
    old_left = new_left = line_no = 0
    lines = diff.splitlines()
    for i, line in enumerate(lines):
        if old_left > 0 or new_left > 0:
            if line.startswith("\\"):  # "\ No newline at end of file"
                continue
            kind = line[:1] or " "  # an empty line: a blank context line whose space an editor trimmed
            if kind not in " -+":  # a malformed hunk ends here
                old_left = new_left = 0
                continue
            if kind in " -":
                old_left -= 1
            if kind in " +":
                new_left -= 1
                if kind == "+" and current is not None:
                    current.add(line_no)
                line_no += 1
        elif line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            name = _diff_name(lines[i + 1][4:])
            current = None if name is None else changed.setdefault(name, set())
        elif (match := _HUNK.match(line)) is not None:
            old_left = int(match.group(2)) if match.group(2) is not None else 1
            new_left = int(match.group(4)) if match.group(4) is not None else 1
            line_no = int(match.group(3))
    return changed


def _diff_name(raw: str) -> str | None:
    """A ---/+++ line's path, without its a/ or b/ prefix and any tab-separated timestamp; None for /dev/null."""
    raw = raw.split("\t")[0].strip()
    if raw.startswith('"') and raw.endswith('"') and len(raw) > 1:  # git quotes names with unusual bytes
        raw = raw[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1").decode(
            "utf-8", "replace")
    if raw == "/dev/null":
        return None
    if raw[:2] in ("a/", "b/"):
        raw = raw[2:]
    return raw


def from_diff(diff: str, root: str | Path = ".") -> Target:
    """The Python files a unified diff changes, read from `root` (which holds the diff's new side), with their
    added lines; a file missing under `root` or outside it is noted, not fatal."""
    if len(diff.encode("utf-8", "replace")) > MAX_DIFF_BYTES:
        raise InputError(f"the diff is over {MAX_DIFF_BYTES:,} bytes: review a smaller one")
    if not diff.strip():
        raise InputError("the diff is empty: nothing changed, nothing to review")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"{str(root)[:200]!r} is not a folder: --root must be where the diff's files are")
    changed = changed_lines(diff)
    if not changed and not re.search(r"^(diff --git|\+\+\+ |Binary files)", diff, re.M):
        raise InputError("this is not a unified diff (no ---/+++ file headers): give `git diff` or `diff -u` output")
    target = Target(root, [], changed={}, description="diff")
    for name, lines in changed.items():
        if not name.endswith(PYTHON_SUFFIXES):
            continue
        if not _inside(root, name):
            target.notes.append(f"{name[:200]}: skipped, the path leaves the root folder")
        elif not (root / name).is_file():
            target.notes.append(f"{name[:200]}: skipped, not found under {root} (run from the repository's root, "
                                "or give --root)")
        else:
            target.files.append(PurePosixPath(name).as_posix())
            target.changed[PurePosixPath(name).as_posix()] = lines
    return _bounded(target)


def _inside(root: Path, name: str) -> bool:
    if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
        return False
    return (root / name).resolve().is_relative_to(root)


# --- git ranges -------------------------------------------------------------------------------------------------------

def from_git(repo: str | Path, revisions: str) -> Target:
    """The Python files changed in `revisions` of the repository at `repo`: "A..B", "A...B" (from their merge
    base) or "A" (A..HEAD); each exported at B into a temporary root with the repository's tool configuration."""
    repo = Path(repo).expanduser()
    if shutil.which("git") is None:
        raise InputError("git is not installed: install it, or review a diff with --diff")
    if not repo.is_dir() or _git(repo, "rev-parse", "--is-inside-work-tree", check=False).strip() != "true":
        raise InputError(f"{str(repo)[:200]!r} is not a git repository")
    start, dots, end = revisions.partition("...") if "..." in revisions else revisions.partition("..")
    end = end or "HEAD"
    for revision in (start, end):
        if not _REVISION.match(revision) or revision.startswith("-"):
            raise InputError(f"{revisions[:100]!r} is not a revision range: give A..B, A...B or A")
    start_sha, end_sha = _commit(repo, start), _commit(repo, end)
    if dots == "...":
        start_sha = _git(repo, "merge-base", start_sha, end_sha).strip()
    diff = _git(repo, "diff", "--no-color", "--no-ext-diff", "--no-textconv", "--unified=0", "--no-renames",
                start_sha, end_sha, "--", *(f"*{suffix}" for suffix in PYTHON_SUFFIXES))
    temporary = tempfile.TemporaryDirectory(prefix="llmkit-review-")
    root = Path(temporary.name)
    target = Target(root, [], changed={}, description=f"{revisions} in {repo.resolve().name}", _temporary=temporary)
    try:
        for name, lines in changed_lines(diff).items():
            if not _inside(root, name):
                target.notes.append(f"{name[:200]}: skipped, the path leaves the repository")
                continue
            content = _git_blob(repo, end_sha, name)
            if content is None:
                target.notes.append(f"{name[:200]}: skipped, not a regular file at {end}")
                continue
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(content)
            target.files.append(name)
            target.changed[name] = lines
        for name in CONFIG_FILES:
            content = _git_blob(repo, end_sha, name)
            if content is not None and len(content) <= MAX_FILE_BYTES:
                (root / name).write_bytes(content)
        return _bounded(target)
    except BaseException:
        target.close()
        raise


def _commit(repo: Path, revision: str) -> str:
    sha = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}",
               check=False).strip()
    if not sha:
        raise InputError(f"{revision[:100]!r} is not a commit of {repo.resolve().name}")
    return sha


def _git_blob(repo: Path, commit: str, name: str) -> bytes | None:
    """The file `name` at `commit`, None when it is not a regular file there (or is over MAX_FILE_BYTES)."""
    listed = _git(repo, "ls-tree", "-z", "-l", "--end-of-options", commit, "--", f":(literal){name}").split("\0")[0]
    meta = listed.split("\t")[0].split()
    if len(meta) < 4 or meta[0] not in ("100644", "100755") or not meta[3].isdigit():
        return None
    if int(meta[3]) > MAX_FILE_BYTES:
        return None
    return subprocess.run(["git", "-C", str(repo), "cat-file", "blob", meta[2]], capture_output=True, check=True,
                          timeout=GIT_SECONDS).stdout


def _git(repo: Path, *args: str, check: bool = True) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=GIT_SECONDS,
                              errors="surrogateescape", env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except subprocess.TimeoutExpired:
        raise InputError(f"git {args[0]} took over {GIT_SECONDS} s in {repo}") from None
    if check and done.returncode != 0:
        raise InputError(f"git {args[0]} failed in {str(repo)[:200]}: {done.stderr.strip()[:300]}")
    return done.stdout if done.returncode == 0 else ""
