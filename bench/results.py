"""The benchmarks' one results writer: prints a report and saves it as NAME.md and NAME.json under bench/results/.

Both files open with the run: date, machine, cores, Python and torch versions, and the command line, so a
committed result says how to reproduce it. Every benchmark is a module, run from the repository root as
`.venv/bin/python -m bench.NAME` (as a file, its own folder would come first on sys.path and `bench/rag.py` would
shadow the `rag` package); none is part of the test suite. This module times nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from datetime import date
from importlib.metadata import version
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]  # where `python -m bench.NAME` runs, also for a benchmark's subprocesses


def parser(name: str, doc: str) -> argparse.ArgumentParser:
    """Benchmark `name`'s command line: described by the first line of its docstring, with `--results DIR`."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=doc.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="folder for NAME.md and NAME.json (default: bench/results, the committed ones)")
    return parser


def run_info(name: str) -> dict:
    """What a result needs beside its figures to be compared with another run's."""
    return {"date": str(date.today()), "machine": platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": version("torch"),
            "command": shlex.join([".venv/bin/python", "-m", f"bench.{name}", *sys.argv[1:]])}


def write(name: str, title: str, body: str, data: dict, directory: Path = RESULTS) -> str:
    """Print `# title`, the run line and `body` (markdown), save them as directory/NAME.md and
    {"run": ..., **data} as directory/NAME.json; returns the markdown."""
    run = run_info(name)
    text = (f"# {title}\n\n{run['date']}, {run['machine']}, {run['cores']} cores, Python {run['python']}, "
            f"torch {run['torch']}. Command: `{run['command']}`\n\n{body.strip()}\n")
    print(text)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.md").write_text(text)
    (directory / f"{name}.json").write_text(json.dumps({"run": run, **data}, indent=1) + "\n")
    return text
