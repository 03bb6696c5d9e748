"""Isolated calls: a function run in a new process that is killed, with everything it started, at its timeout.

`run_isolated` starts a fresh interpreter running this file (no copy of the caller's threads, locks or
loaded models), in a new session: the child and every process it starts share one process group, which
exists before the child runs any code. The child is prepared as multiprocessing's "spawn" prepares
one (the caller's sys.path, working directory and main module), finds the function by its module and
qualified name, and receives the arguments as a pickle. When the call returns, raises or runs past its
timeout, the whole group gets SIGKILL and the child is reaped: an isolated call leaves no process behind.
It does not use multiprocessing.Process, whose spawn starts a resource-tracker process that outlives the call.

The timeout counts from the moment the child has found the function, so the start-up (a new interpreter
importing the function's module, which may import torch) is not the tool's time; it has its own bound,
STARTUP_TIMEOUT_S.

Does not: run on Windows (no process groups: `check_isolatable` refuses there), kill a descendant that
leaves the group (a daemon that calls setsid itself), limit memory or CPU, or sandbox (the child has the
caller's files, network and permissions). Runs as a script in the child, so it imports only the standard
library.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import multiprocessing.spawn
import os
import pickle
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

STARTUP_TIMEOUT_S = 60.0  # for the child to start and import the function's module, beyond the call's timeout
_EXIT_GRACE_S = 2.0  # for a child that has answered to exit by itself (flushing its output) before the group is killed


class Expired(TimeoutError):
    """Our timeout, told apart from a TimeoutError the function itself raised."""


class ChildError(Exception):
    """The function raised in the child. Exception objects do not always pickle, so it crosses as text:
    `type_name`, `message` and the child's traceback (shown by str())."""

    def __init__(self, type_name: str, message: str, child_traceback: str):
        super().__init__(f"{type_name}: {message}\n\nIn the isolated process:\n{child_traceback}")
        self.type_name, self.message, self.child_traceback = type_name, message, child_traceback


class NotIsolatable(TypeError):
    """The function cannot run in a new process, or its arguments cannot be sent there: says what to change."""


def check_isolatable(function: Callable) -> None:
    """Raises NotIsolatable when `function` could never run isolated, whatever its arguments."""
    if not hasattr(os, "killpg"):
        raise NotIsolatable("isolated tools need POSIX process groups (Linux, macOS)")
    if not inspect.isfunction(function):
        raise NotIsolatable(f"an isolated tool must be a plain function, got {type(function).__name__}")
    if "<" in function.__qualname__:  # <locals>, <lambda>
        raise NotIsolatable(f"{function.__qualname__} cannot be found by name in a new process: define an isolated "
                            "tool with def at the top level of an importable module, not inside a function and not "
                            "as a lambda")


def run_isolated(function: Callable, kwargs: dict, timeout: float | None) -> Any:
    """`function(**kwargs)` in a new process; its return value.

    Raises, before starting anything, NotIsolatable when the function is not found under its name or an
    argument does not pickle. Then Expired at the timeout (the process group killed), ChildError when the
    function raised or its process died, RuntimeError when the child could not start or load the function
    (a bug to fix, not the model's doing).
    """
    unwrap, arguments = _unwrap(function), _pickle_arguments(kwargs)
    call = pickle.dumps({"preparation": _preparation(), "module": function.__module__,
                         "qualname": function.__qualname__, "unwrap": unwrap, "arguments": arguments})
    reader, writer = os.pipe()
    receiver = Connection(reader, writable=False)
    try:
        process = subprocess.Popen([sys.executable, "-P", __file__, str(writer)], stdin=subprocess.PIPE,
                                   pass_fds=(writer,), start_new_session=True)
    except BaseException:
        receiver.close()
        raise
    finally:
        os.close(writer)  # the child holds the only writer now: its death reads as end of file
    try:
        process.stdin.write(call)
        process.stdin.close()
        ready = _receive(receiver, STARTUP_TIMEOUT_S)
        if ready is None:
            raise RuntimeError(f"the isolated process for {function.__qualname__} did not start within "
                               f"{STARTUP_TIMEOUT_S:g} s")
        if ready[0] != "ready":
            raise RuntimeError(f"the isolated process could not load {function.__module__}.{function.__qualname__}"
                               f": {ready[1] if ready[0] == 'failed' else 'it exited'}")
        outcome = _receive(receiver, timeout)
        if outcome is None:
            raise Expired()
        if outcome[0] == "returned":
            _wait_unreaped(process.pid, _EXIT_GRACE_S)
    finally:
        _kill_group(process)
        receiver.close()
    if outcome[0] == "returned":
        return pickle.loads(outcome[1])
    if outcome[0] == "raised":
        raise ChildError(*outcome[1:])
    raise ChildError("ChildProcessError", f"the isolated process exited with code {process.returncode} before "
                                          "it returned", "")


def _receive(receiver: Connection, timeout: float | None) -> tuple | None:
    """The child's next message, ("exited",) when it died first, None at the timeout."""
    if not receiver.poll(timeout):
        return None
    try:
        return receiver.recv()
    except EOFError:
        return ("exited",)


def _preparation() -> dict:
    """What multiprocessing.spawn.prepare needs to give the child this process's view: sys.path, the working
    directory, the main module (a script's tools live there). Built here, as spawn's own get_preparation_data
    fixes this process's start method as a side effect."""
    data = {"sys_path": sys.path, "dir": os.getcwd()}
    main = sys.modules["__main__"]
    if getattr(main.__spec__, "name", None) is not None:  # python -m NAME
        data["init_main_from_name"] = main.__spec__.name
    elif getattr(main, "__file__", None) is not None:  # python script.py (an absolute path since Python 3.9)
        data["init_main_from_path"] = main.__file__
    return data


def _unwrap(function: Callable) -> bool:
    """Whether the child finds `function` under its name as itself (False) or as the `function` of a Tool there
    (True: what @tool leaves)."""
    found: Any = sys.modules.get(function.__module__)
    for part in function.__qualname__.split("."):
        found = getattr(found, part, None)
    if found is function or getattr(found, "function", None) is function:
        return found is not function
    raise NotIsolatable(f"{function.__module__}.{function.__qualname__} is neither this function nor a tool of it, "
                        "so a new process would not find the function by its name: give an isolated tool a name of "
                        "its own at the top level of its module")


def _pickle_arguments(kwargs: dict) -> bytes:
    for name, value in kwargs.items():
        try:
            pickle.dumps(value)
        except Exception as error:  # PicklingError, TypeError, AttributeError: each type says it differently
            raise NotIsolatable(f"argument {name!r} ({type(value).__name__}) cannot be pickled to send it to the "
                                f"isolated process: {error}") from error
    return pickle.dumps(kwargs)


def _wait_unreaped(pid: int, seconds: float) -> None:
    """Until the child exits or `seconds` pass, leaving it unreaped (WNOWAIT), so its group id stays its own."""
    deadline = time.monotonic() + seconds
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None and time.monotonic() < deadline:
        time.sleep(0.01)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to the child's process group, then reap the child. Sent before the reaping, so the group's id
    cannot yet belong to another process."""
    with contextlib.suppress(ProcessLookupError):  # no group left (on systems where a reapable child leaves it)
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _serve(sender: Connection) -> None:
    """In the child: prepare as spawn does, find the function, say "ready", call it, send the outcome."""
    call = pickle.load(sys.stdin.buffer)
    try:
        multiprocessing.spawn.prepare(call["preparation"])
        found = importlib.import_module(call["module"])
        for part in call["qualname"].split("."):
            found = getattr(found, part)
        function = found.function if call["unwrap"] else found
        kwargs = pickle.loads(call["arguments"])
    except Exception as error:
        sender.send(("failed", f"{type(error).__name__}: {error}"))
        return
    sender.send(("ready",))
    try:
        value = function(**kwargs)
        if inspect.iscoroutine(value):
            value = asyncio.run(value)
        try:
            result = pickle.dumps(value)
        except Exception as error:
            raise TypeError(f"the result ({type(value).__name__}) cannot be pickled to return it from the isolated "
                            f"process: {error}") from error
        sender.send(("returned", result))
    except BaseException as error:  # SystemExit and KeyboardInterrupt too: the caller hears of them as failures
        sender.send(("raised", type(error).__name__, str(error), traceback.format_exc()))


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1]), readable=False))
