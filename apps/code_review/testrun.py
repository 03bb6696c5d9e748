"""Run a project's tests in its sandbox and read what happened: each test's outcome, the traceback frames of the
failing ones inside the project, and (on request) per-test line coverage.

A pytest command (`pytest ...`, `python -m pytest ...`) runs as `python -m pytest` with a small plugin of ours
(written into the sandbox's scratch folder) that records every test's outcome and its traceback's frames as
JSON, and, under `coverage run`, switches coverage.py's dynamic context to the test's node id, so
CoverageData.contexts_by_lineno says which tests ran each line. The plugin reads pytest's own reports, which
are richer than --junitxml (frames with line numbers, node ids that can be re-run). Any other command runs as
it is, and only its exit status counts: one pseudo-test named after the command.

Does not: run pytest plugins that are not named with `-p NAME` (the sandbox's clean environment turns their
autoloading off, which also saves seconds per run), or tell a test's failure from its own flakiness.
"""

from __future__ import annotations

import json
import select
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from apps.code_review.sandbox import Completed, Sandbox, Session

PLUGIN_NAME = "llmkit_debug_plugin"
PLUGIN = '''
"""llmkit debug's pytest plugin: outcomes and traceback frames as JSON; coverage contexts per test."""
import json, os, traceback
import pytest

_RESULTS = []


def _coverage():
    try:
        import coverage
    except ImportError:
        return None
    return coverage.Coverage.current()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cov = _coverage()
    if cov is not None:
        cov.switch_context(item.nodeid)
    yield
    if cov is not None:
        cov.switch_context("")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    frames = []
    if call.excinfo is not None:
        frames = [(f.filename, f.lineno) for f in traceback.extract_tb(call.excinfo.tb)][-50:]
    _RESULTS.append({"id": item.nodeid, "when": report.when, "outcome": report.outcome, "frames": frames,
                     "message": report.longreprtext[-4000:] if report.failed else ""})


def pytest_collectreport(report):
    if report.failed:
        _RESULTS.append({"id": report.nodeid or "<collection>", "when": "collect", "outcome": "error",
                         "frames": [], "message": report.longreprtext[-4000:]})


def pytest_sessionfinish(session):
    with open(os.environ["LLMKIT_DEBUG_RESULTS"], "w") as file:
        json.dump(_RESULTS, file)
'''

WORKER_NAME = "llmkit_debug_worker"
WORKER = '''
"""llmkit debug's test worker: imports pytest once, then runs each request (a JSON line) in a forked child, so
a run costs a fork instead of an interpreter start. The child imports the project's modules afresh."""
import importlib, json, os, signal, sys, time
import pytest
from _pytest.config import default_plugins

for name in default_plugins:  # pytest.main imports its own plugins: once here, not in every child
    try:
        importlib.import_module("_pytest." + name)
    except ImportError:
        pass

for line in sys.stdin:
    request = json.loads(line)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        output = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.environ["LLMKIT_DEBUG_RESULTS"] = request["results"]
        sys.path.insert(0, os.getcwd())  # as `python -m pytest` has it
        try:
            code = int(pytest.main(request["args"]))
        except BaseException:
            code = 3
        sys.stdout.flush()
        os._exit(code)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass
    deadline, timed_out = start + request["timeout"], False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            timed_out = True
            os.killpg(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.002)
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    reply = {"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out,
             "seconds": time.monotonic() - start}
    sys.stdout.write(json.dumps(reply) + "\\n")
    sys.stdout.flush()
'''


@dataclass
class TestRun:
    """One run of the tests. outcomes: test id -> "passed" | "failed" | "skipped" | "error" (setup, teardown or
    collection); frames: failing test id -> [(path relative to the project, line)], innermost last, only frames
    inside the project; messages: failing test id -> pytest's report text (bounded); coverage: the coverage
    data file when asked for; problem: why the run says nothing about the tests (a timeout, nothing collected,
    a command that did not start), else None."""

    __test__ = False  # not a test class, whatever pytest thinks of the name
    command: list[str]
    completed: Completed
    outcomes: dict[str, str] = field(default_factory=dict)
    frames: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    coverage: Path | None = None
    problem: str | None = None

    @property
    def failing(self) -> list[str]:
        return [test for test, outcome in self.outcomes.items() if outcome in ("failed", "error")]

    @property
    def passing(self) -> list[str]:
        return [test for test, outcome in self.outcomes.items() if outcome == "passed"]


def pytest_arguments(test_cmd: str) -> list[str] | None:
    """pytest's arguments if `test_cmd` runs pytest, else None. Raises ValueError for an empty command."""
    argv = shlex.split(test_cmd)
    if not argv:
        raise ValueError("the test command is empty")
    if Path(argv[0]).name in ("pytest", "py.test"):
        return argv[1:]
    if Path(argv[0]).name.startswith("python") and argv[1:3] == ["-m", "pytest"]:
        return argv[3:]
    return None


class Worker:
    """A pytest worker in the sandbox (see WORKER): `run` costs a fork, not an interpreter start. For screening
    candidates; a final verdict comes from a fresh `run_tests` without it. Broken (`broken`) after a reply that
    does not come: the caller falls back to plain runs."""

    def __init__(self, sandbox: Sandbox):
        (sandbox.scratch / f"{PLUGIN_NAME}.py").write_text(PLUGIN)
        (sandbox.scratch / f"{WORKER_NAME}.py").write_text(WORKER)
        self.sandbox = sandbox
        self.session: Session | None = sandbox.start([sys.executable, str(sandbox.scratch / f"{WORKER_NAME}.py")],
                                                     env={"PYTHONPATH": str(sandbox.scratch)})

    @property
    def broken(self) -> bool:
        return self.session is None

    def run(self, arguments: list[str], results: Path, timeout: float) -> Completed | None:
        """pytest.main(arguments) in a forked child; None (and the worker closed) if no reply came in time."""
        if self.session is None:
            return None
        output = self.sandbox.scratch / "worker-output.txt"
        request = {"args": arguments, "results": str(results), "output": str(output), "timeout": timeout}
        process = self.session.process
        try:
            process.stdin.write((json.dumps(request) + "\n").encode())
            process.stdin.flush()
            ready, _, _ = select.select([process.stdout], [], [], timeout + 10)
            reply = json.loads(process.stdout.readline()) if ready else None
        except (OSError, ValueError):
            reply = None
        if not reply:
            self.close()
            return None
        text = output.read_text(errors="replace")[-200_000:] if output.exists() else ""
        return Completed(reply["returncode"], text, "", reply["seconds"], reply["timed_out"])

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


def run_tests(sandbox: Sandbox, test_cmd: str = "pytest -q", only: list[str] | None = None,
              coverage: bool = False, timeout: float | None = None, stop_early: bool = False,
              worker: Worker | None = None) -> TestRun:
    """Run the tests in `sandbox` (all, or the test ids in `only`; `stop_early`: stop at the first failure, without
    formatting tracebacks).
    `coverage`: record per-test line coverage (pytest commands only). `worker`: run in it (without coverage),
    falling back to a plain run if it breaks."""
    arguments = pytest_arguments(test_cmd)
    if arguments is None:
        return _run_plain(sandbox, shlex.split(test_cmd), timeout)
    if only is not None:  # keep the options, drop the paths the command named: the ids say what to run
        arguments = [a for a in arguments if a.startswith("-") or not (sandbox.root / a.split("::")[0]).exists()]
        arguments += [f"./{test}" if test.startswith("-") else test for test in only]  # an id is never an option
    if stop_early:  # a screening run: the first failure decides, its traceback is not needed
        arguments += ["-x", "--tb=no"]
    results = sandbox.scratch / "results.json"
    results.unlink(missing_ok=True)
    (sandbox.scratch / f"{PLUGIN_NAME}.py").write_text(PLUGIN)
    pytest = ["-m", "pytest", "-p", PLUGIN_NAME, "-p", "no:cacheprovider", *arguments]
    data = sandbox.scratch / ".coverage"
    if coverage:
        data.unlink(missing_ok=True)
        command = [sys.executable, "-m", "coverage", "run", f"--data-file={data}", f"--source={sandbox.root}", *pytest]
    else:
        command = [sys.executable, *pytest]
    completed = None
    if worker is not None and not coverage:
        completed = worker.run(pytest[2:], results, min(timeout or sandbox.limits.wall_seconds,
                                                        sandbox.limits.wall_seconds))
    if completed is None:
        completed = sandbox.run(command, timeout=timeout, env={"PYTHONPATH": str(sandbox.scratch),
                                                              "LLMKIT_DEBUG_RESULTS": str(results)})
    run = TestRun(command, completed, coverage=data if coverage and data.exists() else None)
    if completed.timed_out:
        run.problem = f"the tests did not finish: {completed.ended}"
        return run
    try:
        records = json.loads(results.read_text())
    except (OSError, ValueError):
        run.problem = f"pytest did not report ({completed.ended}): {(completed.stderr or completed.stdout)[-500:]}"
        return run
    _read_records(run, records, sandbox.root)
    if not run.outcomes:
        run.problem = f"no tests ran ({completed.ended}): {completed.stdout[-300:]}"
    return run


def _read_records(run: TestRun, records: list[dict], root: Path) -> None:
    for record in records:
        test, outcome = record["id"], record["outcome"]
        if outcome == "failed" and record["when"] != "call":
            outcome = "error"
        if outcome == "passed" and record["when"] != "call":
            continue
        if run.outcomes.get(test) not in ("failed", "error"):
            run.outcomes[test] = outcome
        if outcome in ("failed", "error"):
            run.messages.setdefault(test, record["message"])
            frames = [(_relative(file, root), line) for file, line in record["frames"]]
            run.frames.setdefault(test, [(file, line) for file, line in frames if file is not None])


def _relative(file: str, root: Path) -> str | None:
    path = Path(file)
    if not path.is_absolute():
        path = root / path
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else None


def _run_plain(sandbox: Sandbox, argv: list[str], timeout: float | None) -> TestRun:
    completed = sandbox.run(argv, timeout=timeout)
    run = TestRun(argv, completed)
    if completed.timed_out or completed.returncode is None:
        run.problem = f"the test command did not finish: {completed.ended} {completed.stderr[-300:]}"
        return run
    test = shlex.join(argv)
    run.outcomes[test] = "passed" if completed.returncode == 0 else "failed"
    if completed.returncode:
        run.messages[test] = (completed.stdout + completed.stderr)[-4000:]
    return run
