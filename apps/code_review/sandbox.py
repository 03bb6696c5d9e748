"""Run a command in a temporary copy of a project: no network, no writes outside the copy, a clean
environment, resource limits and a wall-clock timeout.

Isolation, the strongest this machine allows (probed once, `Sandbox.isolation` says which is active):
- "bwrap": bubblewrap with new user, pid, network, ipc and uts namespaces and no capabilities; the whole
  filesystem bound read-only, a private /tmp, and only the sandbox folder (the copy and our scratch files) bound
  read-write.
- "unshare": `unshare -n` (`-rn` for a non-root user): a new network namespace only; the filesystem is not
  protected beyond the user's own permissions.
- "rlimits": the limits below and nothing else.
Everywhere: rlimits on CPU time, address space, file size and process count (set in preexec_fn; inside a
bwrap user namespace the process count is set inside it, so it counts the sandbox's processes only), a pids
cgroup where one is writable (root ignores RLIMIT_NPROC), a new session killed as a whole at the wall-clock
timeout, and output written to files (bounded by the file-size limit) of which only a bounded tail is read.

Does not: make the copy safe to read afterwards (treat what a command wrote as untrusted text), or hide the
rest of the filesystem from reading (bwrap binds it read-only so interpreters and libraries work).
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SKIP = {".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", ".pytest_cache", ".mypy_cache",
        ".ruff_cache", ".tox", ".nox", ".coverage", "build", "dist", ".eggs"}
MAX_FILES = 5000  # a project bigger than this is refused before copying
MAX_BYTES = 100 << 20
OUTPUT_CHARS = 200_000  # of each of stdout and stderr, the tail kept
MODES = ("bwrap", "unshare", "rlimits")


class SandboxError(RuntimeError):
    """The project cannot be sandboxed (too big, not a folder) or the requested isolation is unavailable."""


@dataclass(frozen=True)
class Limits:
    """Per command. cpu_seconds: CPU time of each process; memory_bytes: address space of each process;
    processes: how many may exist at once; file_bytes: the largest file one may write; wall_seconds: the
    whole command, its children included."""

    cpu_seconds: int = 120
    memory_bytes: int = 4 << 30
    processes: int = 128
    file_bytes: int = 64 << 20
    wall_seconds: float = 120.0

    def __post_init__(self):
        for name in ("cpu_seconds", "memory_bytes", "processes", "file_bytes", "wall_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Completed:
    """What a sandboxed command did. returncode: negative for a signal (-9 after a timeout); None if it never
    started. `ended` in words: "exit 0", "timeout after 5 s", "killed by SIGXCPU (CPU time limit)" (or
    "exit 152: SIGXCPU ..." where bwrap's init reports the signal as 128 + its number)."""

    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool

    @property
    def ended(self) -> str:
        if self.timed_out:
            return f"timeout after {self.seconds:.1f} s"
        if self.returncode is None:
            return "did not start"
        number = -self.returncode if self.returncode < 0 else self.returncode - 128  # bwrap's init: 128 + signal
        if number <= 0 or number not in signal.valid_signals():
            return f"exit {self.returncode}"
        name = signal.Signals(number).name
        why = {"SIGXCPU": " (CPU time limit)", "SIGXFSZ": " (file size limit)", "SIGKILL": " (killed)"}.get(name, "")
        return f"killed by {name}{why}" if self.returncode < 0 else f"exit {self.returncode}: {name}{why}"


def copy_project(source: Path, destination: Path) -> None:
    """Copy `source` into `destination`, skipping VCS folders, virtualenvs and caches; refuses one too big."""
    files, size = 0, 0
    for folder, dirs, names in os.walk(source):
        dirs[:] = [d for d in dirs if d not in SKIP]
        files += len(names)
        size += sum(os.lstat(os.path.join(folder, n)).st_size for n in names)
        if files > MAX_FILES or size > MAX_BYTES:
            raise SandboxError(f"{source} is too big to sandbox (over {MAX_FILES} files or {MAX_BYTES >> 20} MiB "
                               "after skipping .git, virtualenvs and caches)")
    shutil.copytree(source, destination, symlinks=True, ignore=lambda _, names: [n for n in names if n in SKIP])


def _runs(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=20, stdin=subprocess.DEVNULL).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.cache
def available_isolation() -> str:
    """The strongest mode that works here, probed once with a command that needs it."""
    if shutil.which("bwrap") and _runs([*_bwrap_args(Path(tempfile.gettempdir())), "true"]):
        return "bwrap"
    if shutil.which("unshare") and _runs([*_unshare_args(), "true"]):
        return "unshare"
    return "rlimits"


def _interpreter_under_tmp() -> list[Path]:
    """The folders our Python runs from that lie under /tmp (a venv in a checkout there): the private /tmp would
    hide them, and the sandboxed python, pytest and coverage with them."""
    tmp = Path("/tmp").resolve()
    paths = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, *sys.path) if p}
    under = [p for p in paths if p != tmp and p.is_relative_to(tmp) and p.exists()]
    return sorted(p for p in under if not any(p != q and p.is_relative_to(q) for q in under))


def _bwrap_args(writable: Path) -> list[str]:
    # Order matters: the private /tmp first, then the interpreter's folders under /tmp read-only and the sandbox
    # folder (often under /tmp) read-write on top of it. Run by root, bwrap would leave the command every
    # capability in its namespaces (remounting included): drop them all.
    capabilities = ["--cap-drop", "ALL"] if os.geteuid() == 0 else []
    kept = [arg for path in _interpreter_under_tmp() for arg in ("--ro-bind", str(path), str(path))]
    return ["bwrap", "--unshare-all", "--die-with-parent", *capabilities, "--ro-bind", "/", "/", "--dev", "/dev",
            "--proc", "/proc", "--tmpfs", "/tmp", *kept, "--bind", str(writable), str(writable),
            "--chdir", str(writable), "--"]


def _unshare_args() -> list[str]:
    return ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]


def _pids_cgroup(limit: int) -> Path | None:
    """A fresh pids cgroup (v1 or v2) limited to `limit` processes, or None where none can be made."""
    for parent in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if not (parent / "cgroup.procs").exists() or (parent == Path("/sys/fs/cgroup")
                                                       and not (parent / "pids.max").exists()
                                                       and "pids" not in _read(parent / "cgroup.subtree_control")):
            continue
        group = parent / f"llmkit-sandbox-{uuid.uuid4().hex[:12]}"
        try:
            group.mkdir()
            (group / "pids.max").write_text(str(limit))
            return group
        except OSError:
            _remove_cgroup(group)
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _remove_cgroup(group: Path) -> None:
    for _ in range(50):
        for pid in _read(group / "cgroup.procs").split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def read_tail(path: Path) -> str:
    """The last OUTPUT_CHARS bytes of a file a command wrote, as text."""
    with open(path, "rb") as file:
        file.seek(0, os.SEEK_END)
        file.seek(max(0, file.tell() - OUTPUT_CHARS))
        return file.read().decode("utf-8", "replace")


@dataclass
class Session:
    """A long-lived process in the sandbox (`Sandbox.start`): write to `process.stdin`, read `process.stdout`."""

    process: subprocess.Popen
    cgroup: Path | None
    log: IO[bytes]
    end: Callable[[subprocess.Popen, Path | None], None]
    closed: bool = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        self.end(self.process, self.cgroup)
        self.log.close()


class Sandbox:
    """A temporary folder holding a copy of a project (`root`) and scratch files (`scratch`), where commands run
    isolated (`run`). Use as a context manager, or call `close()`: the folder is deleted. `isolation`: "auto"
    (the strongest available) or one of MODES, refused when unavailable."""

    def __init__(self, project: str | Path, limits: Limits = Limits(), isolation: str = "auto"):
        project = Path(project).resolve()
        if not project.is_dir():
            raise SandboxError(f"not a folder: {project}")
        best = available_isolation()
        if isolation == "auto":
            isolation = best
        elif isolation not in MODES or MODES.index(isolation) < MODES.index(best):
            raise SandboxError(f"isolation {isolation!r} is not available here (best: {best!r}; modes: {MODES})")
        self.mode, self.limits = isolation, limits
        self.folder = Path(tempfile.mkdtemp(prefix="llmkit-sandbox-")).resolve()
        self.root, self.scratch, self.home = self.folder / "project", self.folder / "scratch", self.folder / "home"
        try:
            copy_project(project, self.root)
            self.scratch.mkdir()
            self.home.mkdir()
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        self.cgroup_works = os.geteuid() == 0 and _pids_cgroup_probe()
        self._sessions: list[Session] = []

    @property
    def isolation(self) -> str:
        """Which isolation is active, in words."""
        what = {"bwrap": "bwrap (no network; filesystem read-only except the copy; own pid, user, ipc namespaces; "
                         "no capabilities)",
                "unshare": "unshare -n (no network; filesystem NOT protected beyond user permissions)",
                "rlimits": "rlimits only (network and filesystem NOT isolated)"}[self.mode]
        processes = "pids cgroup" if self.cgroup_works else "RLIMIT_NPROC"
        return (f"{what}; limits: cpu {self.limits.cpu_seconds} s, memory {self.limits.memory_bytes >> 20} MiB, "
                f"{self.limits.processes} processes ({processes}), files {self.limits.file_bytes >> 20} MiB, "
                f"wall {self.limits.wall_seconds:g} s; clean environment")

    def environment(self) -> dict[str, str]:
        """The clean environment a command gets: the interpreter's folder first on PATH, a private HOME, no
        PYTHON* or proxy variables from ours; pytest plugins load only when named (`-p NAME`)."""
        return {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(self.home),
                "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp" if self.mode == "bwrap" else str(self.scratch),
                "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
                "NO_COLOR": "1"}

    def _command(self, argv: list[str]) -> list[str]:
        if self.mode == "bwrap":
            command = _bwrap_args(self.folder)[:-3] + ["--chdir", str(self.root), "--"]
            if shutil.which("prlimit"):  # inside the user namespace, RLIMIT_NPROC counts only the sandbox's processes
                return [*command, "prlimit", f"--nproc={self.limits.processes}", "--", *argv]
            return [*command, *argv]
        return [*_unshare_args(), *argv] if self.mode == "unshare" else list(argv)

    def _spawn(self, argv: list[str], env: dict[str, str] | None, **streams) -> tuple:
        """Start `argv` confined; (process, cgroup or None). The caller ends it with `_end`."""
        limits = self.limits
        command = self._command(argv)
        nproc_outside = self.mode != "bwrap" or not shutil.which("prlimit")
        cgroup = _pids_cgroup(limits.processes + 8) if self.cgroup_works else None
        procs = os.open(cgroup / "cgroup.procs", os.O_WRONLY) if cgroup else None

        def confine():  # in the child, between fork and exec
            if procs is not None:
                os.write(procs, b"0")
            resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if nproc_outside:
                resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))

        try:
            process = subprocess.Popen(command, cwd=self.root, env={**self.environment(), **(env or {})},
                                       start_new_session=True, preexec_fn=confine, **streams)
        except BaseException:
            if cgroup is not None:
                _remove_cgroup(cgroup)
            raise
        finally:
            if procs is not None:
                os.close(procs)
        return process, cgroup

    @staticmethod
    def _end(process: subprocess.Popen, cgroup: Path | None) -> None:
        """Kill what is left of the process's session (a daemonised child too) and its cgroup."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if cgroup is not None:
            _remove_cgroup(cgroup)

    def run(self, argv: list[str], timeout: float | None = None, env: dict[str, str] | None = None) -> Completed:
        """Run `argv` in the copy within the limits, with `env` added to the clean environment; `timeout` (seconds)
        lowers the wall-clock limit. Never raises for what the command does."""
        wall = min(timeout or self.limits.wall_seconds, self.limits.wall_seconds)
        out, err = self.folder / "stdout.txt", self.folder / "stderr.txt"
        start = time.monotonic()
        timed_out = False
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            try:
                process, cgroup = self._spawn(argv, env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
            except OSError as error:
                return Completed(None, "", f"could not start {argv[0]!r}: {error}", 0.0, False)
            try:
                returncode = process.wait(timeout=wall)
            except subprocess.TimeoutExpired:
                timed_out = True
                returncode = -signal.SIGKILL
            finally:
                self._end(process, cgroup)
        return Completed(returncode, read_tail(out), read_tail(err), time.monotonic() - start, timed_out)

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> Session:
        """Start a long-lived confined process talking through pipes (stdin, stdout; stderr to a file). The
        limits apply as in `run`, except the wall clock: end it with `Session.close` (or close the sandbox)."""
        log = open(self.scratch / f"session-{uuid.uuid4().hex[:8]}.log", "wb")  # noqa: SIM115 - the session owns it
        try:
            process, cgroup = self._spawn(argv, env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        except BaseException:
            log.close()
            raise
        session = Session(process, cgroup, log, self._end)
        self._sessions.append(session)
        return session

    def close(self) -> None:
        for session in self._sessions:
            session.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *_) -> None:
        self.close()


@functools.cache
def _pids_cgroup_probe() -> bool:
    group = _pids_cgroup(16)
    if group is None:
        return False
    _remove_cgroup(group)
    return True
