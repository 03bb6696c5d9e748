"""The code-review web app (`llmkit code-review`): its settings, start-up, and `CodeReviewApp`, whose methods are
the page's handlers on plain data (tested without a server; ui.py wires them to Gradio).

Review: pasted code or a pasted diff, uploaded files (.py, or a .diff/.patch read against the local path), or a
local folder with an optional revision range -> the findings table and the Markdown report. Debug: a local project
-> the debugger's suspicious lines (highlighted in the code), its verified patches with their diffs and the tests
they made pass.

A web page's user is not the operator: local paths are refused outside the folders given with --root (default: the
folder the app started in), and the test command is the operator's (--test), shown on the page, not typed there
(the debugger runs it on the project, in its sandbox). Pasted text is bounded (inputs.MAX_FILE_BYTES) before any
work; refused input raises AppError, whose message is the page's.
"""

from __future__ import annotations

import argparse
import html
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from apps.code_review.explain import explain, patch_candidates
from apps.code_review.inputs import PYTHON_SUFFIXES, InputError, Target, from_code, from_diff, from_git, from_path
from apps.code_review.report import markdown, summary
from apps.code_review.review import Review, review
from apps.common import AppSettings, add_allow_host_flag, add_model_flags, add_server_flags, launch_kwargs

if TYPE_CHECKING:
    from core.chat import ChatModel

PORT = 7863
MAX_UPLOADS = 20
MAX_EXPLAINED = 10  # per review on the page: each is a model call
DEBUG_CANDIDATES = 100
DEBUG_SECONDS = 180.0
MAX_HIGHLIGHTED_FILES = 3
CONTEXT_LINES = 3  # around each suspicious line in the code view
TABLE_HEADERS = ["severity", "file", "line", "tool", "rule", "message", "explanation and fix"]
SUSPICIOUS_HEADERS = ["rank", "file", "line", "score"]


class AppError(ValueError):
    """Input the page refuses; the message says what to change."""


@dataclass
class CodeReviewSettings(AppSettings):
    port: int = PORT
    roots: list[Path] = field(default_factory=lambda: [Path.cwd()])
    test: str = "pytest -q"
    no_model: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_flags(parser)
    add_server_flags(parser, port=PORT)
    add_allow_host_flag(parser)
    parser.add_argument("--root", dest="roots", action="append", type=Path, metavar="DIR",
                        help="a folder whose projects the page may review and debug (repeatable; default: the "
                        "current folder)")
    parser.add_argument("--test", default="pytest -q", metavar="CMD", help="the debugger's test command (default: "
                        "pytest -q); the page shows it but cannot change it")
    parser.add_argument("--no-model", action="store_true", default=None, help="no explanations, no model loaded")


def run(args: argparse.Namespace) -> None:
    serve(CodeReviewSettings.from_args(args))


def serve(settings: CodeReviewSettings) -> None:
    from apps.code_review.ui import CSS, build_demo  # gradio loads only here

    llm = None
    if not settings.no_model:
        print("Loading the model...", flush=True)
        llm = settings.load_model()
    app = CodeReviewApp(llm, settings.roots, settings.test)
    build_demo(app).queue().launch(css=CSS, **launch_kwargs(settings))


@dataclass
class ReviewView:
    """What the page shows of a review: its status line, table rows and Markdown report."""

    status: str
    rows: list[list]
    report: str


@dataclass
class DebugView:
    status: str
    suspicious: list[list]
    code_html: str
    patches: str
    result: dict


class CodeReviewApp:
    def __init__(self, llm: ChatModel | None, roots: list[Path], test_cmd: str = "pytest -q"):
        self.llm, self.test_cmd = llm, test_cmd
        self.roots = [Path(root).expanduser().resolve() for root in roots]

    @property
    def model_line(self) -> str:
        return f"Explanations by `{self.llm.name}`." if self.llm else "No model: findings without explanations."

    def local_path(self, text: str) -> Path:
        """A path typed on the page, if it is inside one of the roots; AppError otherwise."""
        text = (text or "").strip()
        if not text:
            raise AppError("Type a local folder's path first.")
        path = Path(text[:1000]).expanduser().resolve()
        if not any(path.is_relative_to(root) for root in self.roots):
            raise AppError(f"{text[:200]} is outside the folders this page may read ("
                           f"{', '.join(map(str, self.roots))}); the operator adds more with --root.")
        if not path.exists():
            raise AppError(f"{text[:200]} does not exist.")
        return path

    # --- review ---------------------------------------------------------------------------------------------------

    def review_text(self, text: str, path: str = "", all_lines: bool = False) -> ReviewView:
        """Pasted code, or a pasted diff (read against `path`, the local folder holding its new side)."""
        text = text or ""
        if looks_like_diff(text):
            root = self.local_path(path) if path.strip() else self.roots[0]
            return self._review(lambda: from_diff(text, root), all_lines)
        return self._review(lambda: from_code(text), all_lines)

    def review_uploads(self, files: list, path: str = "", all_lines: bool = False) -> ReviewView:
        """Uploaded .py files (reviewed together), or one .diff/.patch (read against `path`)."""
        paths = [Path(getattr(f, "name", f)) for f in files or []]
        if not paths:
            raise AppError("Upload a .py file or a .diff first.")
        if len(paths) > MAX_UPLOADS:
            raise AppError(f"{len(paths)} files at once; the limit is {MAX_UPLOADS}.")
        diffs = [p for p in paths if p.suffix in (".diff", ".patch")]
        if diffs:
            if len(paths) > 1:
                raise AppError("Upload one diff alone, or Python files.")
            text = diffs[0].read_text(errors="replace")
            if not looks_like_diff(text):
                raise AppError(f"{diffs[0].name[:100]} is not a unified diff (no ---/+++ file headers).")
            return self.review_text(text, path, all_lines)
        wrong = [p.name for p in paths if p.suffix not in PYTHON_SUFFIXES]
        if wrong:
            raise AppError(f"{wrong[0][:100]} is neither Python (.py) nor a diff (.diff, .patch).")
        return self._review(lambda: _uploaded(paths), all_lines)

    def review_path(self, path: str, revisions: str = "", all_lines: bool = False) -> ReviewView:
        """A local file or folder, or its git revision range."""
        local = self.local_path(path)
        if revisions.strip():
            return self._review(lambda: from_git(local, revisions.strip()), all_lines)
        return self._review(lambda: from_path(local), all_lines)

    def _review(self, open_target, all_lines: bool) -> ReviewView:
        try:
            with open_target() as target:
                result = review(target, all_lines=all_lines, llm=self.llm, max_explained=MAX_EXPLAINED)
        except InputError as error:
            raise AppError(str(error)) from None
        return ReviewView(f"**{summary(result)}** ({result.seconds:.1f} s). {self.model_line}", table(result),
                          markdown(result))

    # --- debug ----------------------------------------------------------------------------------------------------

    def debug(self, path: str, max_candidates: int = DEBUG_CANDIDATES, max_seconds: float = DEBUG_SECONDS,
              progress=None) -> DebugView:
        """The debugger on a local project: nothing in it changes (no --apply from the page)."""
        from apps.code_review.debug import debug
        from apps.code_review.sandbox import SandboxError

        project = self.local_path(path)
        if not project.is_dir():
            raise AppError(f"{path[:200]} is not a folder: give the project's folder.")
        try:
            result = debug(str(project), test_cmd=self.test_cmd, llm=self.llm, max_candidates=int(max_candidates),
                           max_seconds=float(max_seconds), apply=False, progress=progress).to_json()
        except (ValueError, SandboxError) as error:
            raise AppError(str(error)) from None
        patches = result.get("patches") or []
        comments = explain(self.llm, [patch_candidates(p) for p in patches[:5]])
        suspicious = result.get("suspicious") or []
        failing = result.get("failing") or []
        status = (f"**{len(failing)} failing test{'s' if len(failing) != 1 else ''}, {len(patches)} verified "
                  f"patch{'es' if len(patches) != 1 else ''}** in {result.get('seconds', 0):.1f} s. Isolation: "
                  f"{result.get('isolation')}. Test command: `{self.test_cmd}`."
                  + (f" **{result['problem']}**" if result.get("problem") else ""))
        rows = [[n, s["file"], s["line"], round(float(s["score"]), 3)] for n, s in enumerate(suspicious[:30], 1)]
        return DebugView(status, rows, highlighted(project, suspicious), patches_markdown(patches, comments), result)


def looks_like_diff(text: str) -> bool:
    lines = text.lstrip().splitlines()[:50]
    return bool(lines) and (lines[0].startswith("diff --git") or any(
        a.startswith("--- ") and b.startswith("+++ ") for a, b in zip(lines, lines[1:], strict=False)))


def _uploaded(paths: list[Path]) -> Target:
    """Uploaded Python files, copied into one temporary root under their own names."""
    temporary = tempfile.TemporaryDirectory(prefix="llmkit-review-")
    root = Path(temporary.name)
    names = []
    for path in paths:
        name = path.name if path.name not in names else f"{len(names)}_{path.name}"
        if path.stat().st_size > 1_000_000:
            temporary.cleanup()
            raise InputError(f"{path.name[:100]} is over 1 MB")
        shutil.copyfile(path, root / name)
        names.append(name)
    return Target(root, names, description=f"{len(names)} uploaded file{'s' if len(names) != 1 else ''}",
                  _temporary=temporary)


def table(result: Review) -> list[list]:
    return [[f.severity, f.file, f.line, f.tool, f.rule, f.message, f"{e.explanation} Fix: {e.fix_hint}" if e else ""]
            for f, e in zip(result.findings, result.explanations, strict=True)]


def highlighted(project: Path, suspicious: list[dict]) -> str:
    """The code around the suspicious lines of the first files, each line's background as strong as its score."""
    by_file: dict[str, dict[int, float]] = {}
    for item in suspicious:
        by_file.setdefault(str(item["file"]), {})[int(item["line"])] = float(item["score"])
    parts = []
    for name, scores in list(by_file.items())[:MAX_HIGHLIGHTED_FILES]:
        path = (project / name).resolve()
        if not path.is_relative_to(project) or not path.is_file():
            continue
        lines = path.read_text(errors="replace").splitlines()
        shown = sorted({n for line in scores for n in range(line - CONTEXT_LINES, line + CONTEXT_LINES + 1)
                        if 1 <= n <= len(lines)})
        top = max(scores.values()) or 1.0
        rows, previous = [], None
        for n in shown:
            if previous is not None and n != previous + 1:
                rows.append("<div class='cr-gap'>⋯</div>")
            score = scores.get(n)
            style = f" style='background: rgba(239, 68, 68, {0.15 + 0.6 * score / top:.2f})'" if score else ""
            title = f" title='score {score:.3f}'" if score else ""
            mark = " cr-suspicious" if score else ""
            rows.append(f"<div class='cr-line{mark}'{style}{title}><span class='cr-no'>{n}</span>"
                        f"<code>{html.escape(lines[n - 1][:300])}</code></div>")
            previous = n
        parts.append(f"<div class='cr-file'><p class='cr-name'>{html.escape(name)}</p>{''.join(rows)}</div>")
    return "".join(parts) or "<p>No suspicious lines.</p>"


def patches_markdown(patches: list[dict], comments: list) -> str:
    if not patches:
        return ("**No verified patch**: no candidate made the failing tests pass without breaking a passing one, so "
                "none is proposed.")
    blocks = []
    for n, (patch, comment) in enumerate(zip(patches, comments, strict=False), 1):
        tests = ", ".join(f"`{str(t)[:120]}`" for t in patch.get("fixed_tests") or [])
        diff = str(patch.get("diff", "")).rstrip("\n").replace("```", "`\u200b``")
        blocks.append(f"### Patch {n}: `{patch.get('file')}` line {patch.get('line')} ({patch.get('source')}, "
                      f"{patch.get('size')} characters changed)\nTests it makes pass: {tests or '-'}\n\n"
                      f"```diff\n{diff}\n```\n\n"
                      f"*{comment.explanation}* {comment.fix_hint}")
    return "\n\n".join(blocks)
