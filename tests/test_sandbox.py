"""The sandbox refuses escapes: network, writes outside its copy, a fork bomb, CPU spin, a memory hog, a hang."""

import os
import sys
import time
from pathlib import Path

import pytest

from apps.code_review.sandbox import MODES, Limits, Sandbox, SandboxError, available_isolation

PY = sys.executable


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "module.py").write_text("VALUE = 1\n")
    return folder


def sandbox(project, isolation="auto", **limits):
    return Sandbox(project, Limits(**{"wall_seconds": 20.0, **limits}), isolation)


def modes(*wanted):
    """`wanted` isolation modes as parameters, those weaker than this machine's best included (the fallbacks)."""
    best = MODES.index(available_isolation())
    return [pytest.param(mode, marks=pytest.mark.skipif(MODES.index(mode) < best, reason=f"no {mode} here"))
            for mode in wanted]


def test_the_isolation_says_what_is_active(project):
    with sandbox(project) as box:
        assert box.mode == available_isolation() and box.isolation.startswith(box.mode)
        assert "wall 20 s" in box.isolation and "clean environment" in box.isolation


def test_a_command_runs_in_the_copy_with_a_clean_environment(project, monkeypatch):
    monkeypatch.setenv("LLMKIT_SECRET", "hunter2")
    with sandbox(project) as box:
        done = box.run([PY, "-c", "import os, module; print(module.VALUE, os.getcwd(), 'LLMKIT_SECRET' in os.environ);"
                                  "open('new.txt', 'w').write('x')"])
        assert done.returncode == 0 and done.stdout.split() == ["1", str(box.root), "False"]
        assert (box.root / "new.txt").exists()
    assert not (project / "new.txt").exists()  # the project itself is untouched


@pytest.mark.parametrize("mode", modes("bwrap", "unshare"))
def test_a_network_connect_fails(project, mode):
    with sandbox(project, mode) as box:
        done = box.run([PY, "-c", "import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)"])
    assert done.returncode == 1 and "OSError" in done.stderr and not done.timed_out


@pytest.mark.skipif(available_isolation() != "bwrap", reason="only bubblewrap protects the filesystem")
def test_writing_outside_the_copy_fails(project):
    outside = Path(__file__).parent / "sandbox-escape.txt"
    with sandbox(project) as box:
        done = box.run([PY, "-c", f"open({str(outside)!r}, 'w').write('escaped')"])
        deleted = box.run(["rm", "-f", str(Path(__file__))])
    assert done.returncode == 1 and "Read-only file system" in done.stderr and not outside.exists()
    assert deleted.returncode != 0 and Path(__file__).exists()


@pytest.mark.skipif(available_isolation() != "bwrap", reason="only bubblewrap protects the filesystem")
def test_no_capabilities_to_remount_the_filesystem(project):
    with sandbox(project) as box:
        done = box.run(["sh", "-c", "grep CapEff /proc/self/status; mount -o remount,rw / && echo remounted"])
    assert done.stdout.split() == ["CapEff:", "0" * 16] and done.returncode != 0


def test_a_fork_bomb_is_stopped_by_the_process_limit(project):
    bomb = ("import os, time\nborn = 0\ntry:\n    for _ in range(2000):\n        if os.fork() == 0:\n"
            "            time.sleep(30)\n            os._exit(0)\n        born += 1\n"
            "except OSError as error:\n    print('stopped after', born, error.errno)\n")
    with sandbox(project, processes=32, wall_seconds=10.0) as box:
        if os.geteuid() == 0 and not box.cgroup_works:
            pytest.skip("root ignores RLIMIT_NPROC and no pids cgroup is writable here")
        start = time.monotonic()
        done = box.run([PY, "-c", bomb])
    assert done.stdout.startswith("stopped after") and int(done.stdout.split()[2]) <= 40
    assert time.monotonic() - start < 10 and not done.timed_out  # the sleeping children died with the session


@pytest.mark.parametrize("mode", modes("bwrap", "rlimits"))
def test_a_cpu_spin_is_stopped_by_the_cpu_limit(project, mode):
    with sandbox(project, mode, cpu_seconds=1) as box:
        done = box.run([PY, "-c", "while True: pass"])
    assert "SIGXCPU" in done.ended and done.seconds < 10 and not done.timed_out


def test_a_memory_hog_is_stopped_by_the_memory_limit(project):
    with sandbox(project, memory_bytes=512 << 20) as box:
        done = box.run([PY, "-c", "data = bytearray(1 << 30)"])
    assert done.returncode == 1 and "MemoryError" in done.stderr


@pytest.mark.parametrize("mode", modes("bwrap", "rlimits"))
def test_a_hang_is_killed_at_the_wall_clock_timeout(project, mode):
    with sandbox(project, mode) as box:
        done = box.run(["sh", "-c", "sleep 60 & sleep 60"], timeout=1)
    assert done.timed_out and done.ended.startswith("timeout") and done.seconds < 5


def test_big_or_missing_projects_are_refused(tmp_path, project, monkeypatch):
    monkeypatch.setattr("apps.code_review.sandbox.MAX_FILES", 3)
    for n in range(4):
        (project / f"m{n}.py").write_text("")
    with pytest.raises(SandboxError, match="too big"):
        Sandbox(project)
    with pytest.raises(SandboxError, match="not a folder"):
        Sandbox(tmp_path / "missing")
    with pytest.raises(SandboxError, match="not available"):
        Sandbox(project, isolation="nonsense")
