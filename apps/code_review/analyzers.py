"""The analyzers `llmkit review` runs, each as a subprocess with a timeout, and their results as `Finding`s.

ruff (lint: `ruff check --output-format json`, the project's own settings), bandit (security: `-f json`), radon
(cyclomatic complexity: `cc -j`, a block above the threshold is a finding) and mypy (types: only if installed).
Each runs with the reviewed target's root as its working directory, on the target's files, under this Python
(`python -m TOOL`), so the versions are the ones llmkit was installed with. A tool that is missing, crashes,
writes what cannot be parsed or runs past its timeout gives an `AnalyzerRun` saying so, and the others go on.

Severities: `error` for what breaks at run time (syntax errors, undefined names: flake8's E9, F63, F7, F82 set; a
high-severity bandit issue; every mypy error), `warning` for the rest of ruff and medium bandit issues, `note` for
low bandit issues and complexity. bandit's B101 (assert used) is dropped in test files, where pytest asserts.

The code is parsed, never imported or run: mypy gets an empty configuration, so a reviewed project's mypy plugins
(Python code named in its config) do not run. `rule_docs` reads the tools' own documentation of their rules, which
explain.py builds its candidate sentences from.

Does not: fix code (ruff --fix), or run tests (the debugging half, apps.code_review.debug, does).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

SEVERITIES = ("note", "warning", "error")  # in rising order
DEFAULT_TIMEOUT = 120.0  # seconds per analyzer
COMPLEXITY_THRESHOLD = 10  # radon's rank C starts above it
MAX_MESSAGE_CHARS = 500
ANALYZERS = ("ruff", "bandit", "radon", "mypy")
OPTIONAL = ("mypy",)  # not a dependency: skipped, not failed, when missing
_RUFF_ERRORS = re.compile(r"^(E9|F63|F7|F82)")
_MYPY_LINE = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?:(?P<col>\d+):)? (?P<sev>error|note): (?P<msg>.*?)"
                        r"(?:  \[(?P<code>[\w-]+)\])?$")
_TEST_FILE = re.compile(r"(^|/)(tests?/|test_[^/]*\.py$|[^/]*_test\.py$|conftest\.py$)")


@dataclass(frozen=True)
class Finding:
    """One analyzer result, normalised: `file` relative to the target's root (POSIX), lines from 1 (`end_line` >=
    `line`), `column` from 1 where the tool gives one, `url` the rule's documentation where it gives one."""

    file: str
    line: int
    end_line: int
    rule: str
    severity: str
    message: str
    tool: str
    column: int | None = None
    url: str | None = None

    def __post_init__(self):
        assert self.severity in SEVERITIES, self.severity
        assert 1 <= self.line <= self.end_line, (self.line, self.end_line)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class AnalyzerRun:
    """What one analyzer did: `status` ok, missing (not installed), failed (crashed or wrote nonsense) or timeout;
    `message` says why for the last three, and lists files it could not parse."""

    tool: str
    status: str
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    message: str = ""

    def to_json(self) -> dict:
        return {"tool": self.tool, "status": self.status, "seconds": round(self.seconds, 3),
                "findings": len(self.findings), "message": self.message}


def at_least(severity: str, threshold: str) -> bool:
    return SEVERITIES.index(severity) >= SEVERITIES.index(threshold)


def run_analyzers(root: Path, files: list[str], tools: tuple[str, ...] = ANALYZERS,
                  timeout: float = DEFAULT_TIMEOUT, complexity: int = COMPLEXITY_THRESHOLD) -> list[AnalyzerRun]:
    """Each of `tools` on `files` (relative to `root`), at the same time (each is its own process), in `tools`'
    order. An optional tool that is not installed is left out."""
    runners: dict[str, Callable[[], AnalyzerRun]] = {
        "ruff": lambda: _ruff(root, files, timeout),
        "bandit": lambda: _bandit(root, files, timeout),
        "radon": lambda: _radon(root, files, timeout, complexity),
        "mypy": lambda: _mypy(root, files, timeout),
    }
    unknown = [tool for tool in tools if tool not in runners]
    if unknown:
        raise ValueError(f"unknown analyzer {unknown[0]!r}: choose from {', '.join(ANALYZERS)}")
    chosen = [tool for tool in tools if tool not in OPTIONAL or installed(tool)]
    if not files:
        return [AnalyzerRun(tool, "ok") for tool in chosen]
    with ThreadPoolExecutor(max_workers=len(chosen) or 1) as pool:
        return list(pool.map(lambda tool: runners[tool](), chosen))


def installed(tool: str) -> bool:
    return importlib.util.find_spec(tool) is not None


def _execute(tool: str, args: list[str], root: Path, timeout: float, ok_codes: tuple[int, ...],
             parse: Callable[[str], tuple[list[Finding], str]]) -> AnalyzerRun:
    """`python -m TOOL ARGS` in `root`; its stdout parsed into findings (and a note on files it skipped)."""
    if not installed(tool):
        return AnalyzerRun(tool, "missing", message=f"{tool} is not installed (pip install {tool})")
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", tool, *args], cwd=root, capture_output=True, text=True,
                              errors="replace", timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return AnalyzerRun(tool, "timeout", time.perf_counter() - start, message=f"{tool} ran past {timeout:g} s")
    seconds = time.perf_counter() - start
    if done.returncode not in ok_codes:
        detail = (done.stderr.strip() or done.stdout.strip())[-MAX_MESSAGE_CHARS:]
        return AnalyzerRun(tool, "failed", seconds, message=f"{tool} exited with status {done.returncode}: {detail}")
    try:
        findings, note = parse(done.stdout)
    except (ValueError, KeyError, TypeError) as error:
        return AnalyzerRun(tool, "failed", seconds, message=f"{tool}'s output could not be read: {error}"[:500])
    return AnalyzerRun(tool, "ok", seconds, findings, note)


def _relative(root: Path, name: str) -> str:
    path = Path(name)
    if path.is_absolute():
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return path.as_posix()
    return PurePosixPath(path.as_posix()).as_posix().removeprefix("./")


def _bounded(message: str) -> str:
    message = " ".join(str(message).split())
    return message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS - 1] + "…"


# --- ruff -------------------------------------------------------------------------------------------------------------

def _ruff(root: Path, files: list[str], timeout: float) -> AnalyzerRun:
    args = ["check", "--output-format", "json", "--no-cache", "--force-exclude", "--exit-zero", "--", *files]
    return _execute("ruff", args, root, timeout, (0,), lambda out: (parse_ruff(out, root), ""))


def parse_ruff(output: str, root: Path) -> list[Finding]:
    """ruff's JSON list; a syntax error is rule "invalid-syntax" (older ruffs give it no code)."""
    findings = []
    for item in json.loads(output or "[]"):
        code = item.get("code") or "invalid-syntax"
        start, end = item["location"], item.get("end_location") or item["location"]
        line = max(int(start["row"]), 1)
        fix = (item.get("fix") or {}).get("message")
        message = _bounded(item["message"] + (f" (fix: {fix})" if fix else ""))
        severity = "error" if code == "invalid-syntax" or _RUFF_ERRORS.match(code) else "warning"
        findings.append(Finding(_relative(root, item["filename"]), line, max(int(end["row"]), line), code, severity,
                                message, "ruff", column=int(start["column"]) or None, url=item.get("url")))
    return findings


# --- bandit -----------------------------------------------------------------------------------------------------------

def _bandit(root: Path, files: list[str], timeout: float) -> AnalyzerRun:
    args = ["-f", "json", "-q", "--", *files]
    return _execute("bandit", args, root, timeout, (0, 1), lambda out: parse_bandit(out, root))


BANDIT_SEVERITY = {"HIGH": "error", "MEDIUM": "warning", "LOW": "note", "UNDEFINED": "note"}


def parse_bandit(output: str, root: Path) -> tuple[list[Finding], str]:
    """bandit's JSON report: its results, and a note naming the files it could not parse."""
    report = json.loads(output)
    findings = []
    for item in report["results"]:
        name = _relative(root, item["filename"])
        if item["test_id"] == "B101" and _TEST_FILE.search(name):
            continue
        line = max(int(item["line_number"]), 1)
        lines = item.get("line_range") or [line]
        message = _bounded(f"{item['issue_text']} (confidence {item.get('issue_confidence', '?').lower()})")
        findings.append(Finding(name, line, max(max(lines), line), item["test_id"],
                                BANDIT_SEVERITY.get(item["issue_severity"], "note"), message, "bandit",
                                column=int(item.get("col_offset", 0)) + 1, url=item.get("more_info")))
    errors = [f"{_relative(root, e['filename'])}: {_bounded(e['reason'])[:120]}" for e in report.get("errors", [])]
    return findings, ("could not parse " + "; ".join(errors[:10])) if errors else ""


# --- radon ------------------------------------------------------------------------------------------------------------

def _radon(root: Path, files: list[str], timeout: float, threshold: int) -> AnalyzerRun:
    args = ["cc", "-j", "--", *files]
    return _execute("radon", args, root, timeout, (0,), lambda out: parse_radon(out, root, threshold))


def parse_radon(output: str, root: Path, threshold: int = COMPLEXITY_THRESHOLD) -> tuple[list[Finding], str]:
    """radon cc's JSON: each function, method or class whose complexity is above `threshold`, as a note."""
    findings, errors = [], []
    for name, blocks in json.loads(output or "{}").items():
        if isinstance(blocks, dict):  # {"error": "..."}: a file it could not parse
            errors.append(f"{_relative(root, name)}: {_bounded(blocks.get('error', '?'))[:120]}")
            continue
        for block in blocks:
            complexity = int(block["complexity"])
            if complexity <= threshold:
                continue
            kind = block.get("type", "block")
            qualified = f"{block['classname']}.{block['name']}" if block.get("classname") else block["name"]
            line = max(int(block["lineno"]), 1)
            findings.append(Finding(
                _relative(root, name), line, max(int(block.get("endline") or line), line), "cyclomatic-complexity",
                "note", f"{kind} `{qualified}` has cyclomatic complexity {complexity} (rank {block['rank']}; the "
                f"threshold is {threshold})", "radon", column=int(block.get("col_offset", 0)) + 1,
                url="https://radon.readthedocs.io/en/latest/intro.html#cyclomatic-complexity"))
    return findings, ("could not parse " + "; ".join(errors[:10])) if errors else ""


# --- mypy -------------------------------------------------------------------------------------------------------------

def _mypy(root: Path, files: list[str], timeout: float) -> AnalyzerRun:
    with tempfile.TemporaryDirectory(prefix="llmkit-mypy-") as folder:
        config = Path(folder, "mypy.ini")
        config.write_text("[mypy]\n")  # the project's own config may name plugins: code that mypy would import
        args = ["--config-file", str(config), "--cache-dir", str(Path(folder, "cache")), "--show-column-numbers",
                "--show-error-codes", "--no-error-summary", "--no-color-output", "--hide-error-context",
                "--follow-imports=silent", "--ignore-missing-imports", "--", *files]
        return _execute("mypy", args, root, timeout, (0, 1), lambda out: (parse_mypy(out, root), ""))


def parse_mypy(output: str, root: Path) -> list[Finding]:
    """mypy's `file:line:col: error: message  [code]` lines (its notes, which qualify an error, are left out)."""
    findings = []
    for raw in output.splitlines():
        match = _MYPY_LINE.match(raw.strip())
        if match is None or match["sev"] != "error":
            continue
        line = max(int(match["line"]), 1)
        findings.append(Finding(_relative(root, match["file"]), line, line, match["code"] or "mypy", "error",
                                _bounded(match["msg"]), "mypy", column=int(match["col"]) if match["col"] else None,
                                url=f"https://mypy.readthedocs.io/en/stable/error_code_list.html#{match['code']}"
                                if match["code"] else None))
    return findings


# --- the rules' documentation -----------------------------------------------------------------------------------------

_BANDIT_DOCS = """
import json, sys
from bandit.core import extension_loader as loader
docs = {}
for rule in sys.argv[1:]:
    plugin = loader.MANAGER.plugins_by_id.get(rule)
    listed = loader.MANAGER.blacklist_by_id.get(rule)
    docs[rule] = (plugin.plugin.__doc__ or "") if plugin else (listed or {}).get("message", "")
print(json.dumps(docs))
"""


def rule_docs(tool: str, rules: set[str], timeout: float = 30.0) -> dict[str, str]:
    """The tool's own documentation of each rule (ruff's Markdown, bandit's plugin docstring), as text; a rule, or
    a tool, without any is left out."""
    rules = {rule for rule in rules if re.fullmatch(r"[A-Z]{1,4}\d{1,4}", rule)}
    if not rules or tool not in ("ruff", "bandit") or not installed(tool):
        return {}
    try:
        if tool == "ruff":
            docs = {}
            for rule in sorted(rules):
                done = subprocess.run([sys.executable, "-m", "ruff", "rule", rule, "--output-format", "json"],
                                      capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
                if done.returncode == 0:
                    docs[rule] = json.loads(done.stdout).get("explanation", "")
            return {rule: doc for rule, doc in docs.items() if doc}
        done = subprocess.run([sys.executable, "-c", _BANDIT_DOCS, *sorted(rules)], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        return {rule: doc for rule, doc in json.loads(done.stdout).items() if doc} if done.returncode == 0 else {}
    except (subprocess.TimeoutExpired, ValueError):  # no documentation is not a failure of the review
        return {}


# --- diff-awareness ---------------------------------------------------------------------------------------------------

def on_changed_lines(findings: list[Finding], changed: dict[str, set[int]] | None) -> list[Finding]:
    """The findings whose lines touch a changed line (all of them when `changed` is None): a complexity note on a
    function counts when the change is inside it."""
    if changed is None:
        return list(findings)
    return [f for f in findings if any(line in changed.get(f.file, ()) for line in range(f.line, f.end_line + 1))]


def ordered(findings: list[Finding]) -> list[Finding]:
    """Most severe first, then by file and line."""
    return sorted(findings, key=lambda f: (-SEVERITIES.index(f.severity), f.file, f.line, f.tool, f.rule))
