"""The project's shape: packages resolve inside the repo, layers import one way, core stays light."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["core", "rag", "agents", "apps"]
ALLOWED = {"core": set(), "rag": {"core"}, "agents": {"core", "rag"}, "apps": {"core", "rag", "agents"}}


@pytest.mark.parametrize("package", PACKAGES)
def test_package_resolves_inside_the_repo(package):
    """`agents` is also OpenAI's Agents SDK: the import must find ours."""
    module = __import__(package)
    assert Path(module.__file__).resolve().parent == ROOT / package


def imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_layers_import_one_way(package):
    for path in (ROOT / package).rglob("*.py"):
        wrong = (imported_packages(path) & set(PACKAGES)) - ALLOWED[package] - {package}
        assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}: dependencies run core <- rag <- agents <- apps"


def test_gradio_is_imported_only_by_apps():
    for package in ("core", "rag", "agents"):
        for path in (ROOT / package).rglob("*.py"):
            assert "gradio" not in imported_packages(path), path


def test_core_imports_without_app_dependencies():
    code = ("import sys, core; heavy = {'gradio', 'faiss', 'transformers', 'sentence_transformers'} & set(sys.modules);"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
