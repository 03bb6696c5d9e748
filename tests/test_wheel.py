"""llmkit as a user installs it: a wheel built from the sources, installed without dependencies into a fresh venv,
runs from a folder outside the repository on the sample data it ships (`rag.samples`, package data).

The venv sees this interpreter's installed dependencies through a .pth line. (A venv created by a venv's python
with --system-site-packages sees the base interpreter's packages, not that venv's.) A path line in a .pth file
does not run the .pth files of the folder it adds, so the editable install of llmkit there stays out of the
way, and the test checks that `rag` is the installed wheel's.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "README.md", "core", "rag", "agents", "apps"]  # what the wheel is built from
SAMPLE = "nist-sp800-90b-entropy-suite-user-guide.pdf"
QUESTION = "Which file contains the Markov estimate method?"  # markov.py, listed on page 3


def run(*command, cwd: Path, env: dict | None = None) -> str:
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_the_installed_wheel_indexes_and_searches_its_bundled_sample(tmp_path):
    source = tmp_path / "source"  # a clean copy: a build in the repository would leave build/ (and stale files) there
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist",
        source, cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("llmkit-*.whl")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip())
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "llmkit-dependencies.pth").write_text("\n".join(ours) + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel,
        cwd=tmp_path)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH" and not name.startswith("LLMKIT_")}
    env |= {"LLMKIT_HOME": str(tmp_path / "home"), "LLMKIT_CACHE": str(tmp_path / "cache")}
    code = ("import rag; from rag import samples; from rag.evaluate import load_questions;"
            "print(rag.__file__); print(samples.FOLDER / 'nist-sp800-90b-entropy-suite-user-guide.pdf');"
            "print(len(load_questions()))")
    package, sample, questions = run(python, "-c", code, cwd=outside, env=env).split()
    assert Path(package).is_relative_to(venv) and Path(sample).is_relative_to(venv), (package, sample)
    assert Path(sample).is_file() and int(questions) >= 40

    llmkit = venv / "bin" / "llmkit"
    added = run(llmkit, "index", "add", "sample", sample, cwd=outside, env=env)
    assert f"{SAMPLE}: 9/9 pages with text" in added
    found = json.loads(run(llmkit, "search", "sample", QUESTION, "--json", cwd=outside, env=env))
    top = found["sources"][0]
    assert (top["file"], top["page"]) == (SAMPLE, 3) and "markov.py" in top["text"]
    assert (tmp_path / "home" / "collections" / "sample").is_dir()
