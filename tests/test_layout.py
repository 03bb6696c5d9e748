"""The project's shape: packages resolve inside the repo, layers import one way, core stays light, and apps are
packages that share code only through the modules beside them (apps/common.py), each with a CLI command."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["core", "rag", "agents", "apps"]
ALLOWED = {"core": set(), "rag": {"core"}, "agents": {"core", "rag"}, "apps": {"core", "rag", "agents"}}
APP_PACKAGES = sorted(path.parent.name for path in (ROOT / "apps").glob("*/__init__.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_package_resolves_inside_the_repo(package):
    """`agents` is also OpenAI's Agents SDK: the import must find ours."""
    module = __import__(package)
    assert Path(module.__file__).resolve().parent == ROOT / package


def imported_modules(path: Path) -> set[str]:
    """The dotted names a file imports (`from a.b import c` counts as a.b); relative imports are refused."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.relative_to(ROOT)}:{node.lineno}: a relative import; write it absolute"
            names.add(node.module)
    return names


def imported_packages(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(path)}


def imported_apps(path: Path) -> set[str]:
    """The app packages (apps.NAME) a file imports."""
    return {name.split(".")[1] for name in imported_modules(path) if name.startswith("apps.")} & set(APP_PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_layers_import_one_way(package):
    for path in (ROOT / package).rglob("*.py"):
        wrong = (imported_packages(path) & set(PACKAGES)) - ALLOWED[package] - {package}
        assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}: dependencies run core <- rag <- agents <- apps"


def test_gradio_is_imported_only_by_the_apps_pages():
    """Only an app's ui.py: the rest of an app is tested without gradio, and the CLI imports it to build its parser."""
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "gradio" in imported_packages(path):
                assert path.parent.parent == ROOT / "apps" and path.name == "ui.py", path


def test_core_imports_without_app_dependencies():
    code = ("import sys, core; heavy = {'gradio', 'faiss', 'transformers', 'sentence_transformers'} & set(sys.modules);"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_apps_are_packages():
    assert "pdf_chat" in APP_PACKAGES
    assert sorted(path.name for path in (ROOT / "apps").glob("*.py")) == ["__init__.py", "cli.py", "common.py"]


@pytest.mark.parametrize("app", APP_PACKAGES)
def test_no_app_imports_another(app):
    """What two apps need goes into apps/common.py, not from one app into the other."""
    for path in (ROOT / "apps" / app).rglob("*.py"):
        others = imported_apps(path) - {app}
        assert not others, f"{path.relative_to(ROOT)} imports the app(s) {others}: share code through apps/common.py"


def test_shared_app_modules_import_no_app():
    """apps/common.py serves every app; apps/cli.py names the apps in its table, imported when the parser is built."""
    for path in (ROOT / "apps").glob("*.py"):
        assert not imported_apps(path), path


def test_every_app_has_a_command_and_the_cli_stays_light():
    """Each app package is in the CLI's table with add_arguments and run (the package's, or a module's of it for
    a second command); building the parser (what `llmkit --help` and `llmkit search` do first) imports no gradio
    and no model."""
    code = ("import sys; from apps.cli import APPS, build_parser; build_parser();"
            "print(' '.join(module for _, module, _ in APPS));"
            "heavy = {'gradio', 'sentence_transformers', 'transformers', 'apps.pdf_chat.ui'} & set(sys.modules);"
            "assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True, text=True).stdout
    modules = out.split()
    assert sorted({module.split(".")[1] for module in modules}) == sorted(APP_PACKAGES)
    assert all(f"apps.{app}" in modules for app in APP_PACKAGES)
    for name in modules:
        module = __import__(name, fromlist=["add_arguments", "run"])
        assert callable(module.add_arguments) and callable(module.run), name
