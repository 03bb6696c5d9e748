"""llmkit debug end to end on small projects: localisation, verified patches that `git apply` accepts, PATH left
alone unless apply=True, no patch when nothing fails or nothing verifies, bad input."""

import hashlib
import json
import shutil
import subprocess
import sys

import pytest

from apps.code_review.debug import debug
from apps.code_review.localise import localise
from apps.code_review.sandbox import Limits, Sandbox, SandboxError
from apps.code_review.testrun import run_tests
from core import ScriptedModel

SHOP = '''def subtotal(prices):
    return sum(prices)


def discount(total, percent):
    """The total after taking `percent` percent off."""
    if percent < 0:
        raise ValueError("negative discount")
    return total - total * percent // 100


def is_free_shipping(total):
    return total > 50
'''
SHOP_TESTS = '''import pytest
from shop import discount, is_free_shipping, subtotal


def test_subtotal():
    assert subtotal([1, 2, 3]) == 6


def test_discount():
    assert discount(200, 10) == 180


def test_negative_discount():
    with pytest.raises(ValueError):
        discount(100, -5)


def test_shipping_above():
    assert is_free_shipping(80)


def test_shipping_below():
    assert not is_free_shipping(20)


def test_shipping_at_the_threshold():
    assert is_free_shipping(50)
'''
BUGGY_LINE = 13  # `return total > 50`: free shipping starts at 50


def write_project(folder, source=SHOP, tests=SHOP_TESTS):
    folder.mkdir()
    (folder / "shop.py").write_text(source)
    (folder / "test_shop.py").write_text(tests)
    return folder


def digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return write_project(tmp_path_factory.mktemp("debug") / "shop")


@pytest.fixture(scope="module")
def result(shop):
    before = digest(shop)
    messages = []
    found = debug(shop, progress=messages.append)
    assert digest(shop) == before  # nothing in PATH changes without apply
    found.progress = messages
    return found


def test_localisation_ranks_the_seeded_line_first(shop):
    with Sandbox(shop) as sandbox:
        run = run_tests(sandbox, coverage=True)
        assert run.failing == ["test_shop.py::test_shipping_at_the_threshold"] and len(run.passing) == 5
        ranked = localise(run, sandbox.root)
    assert (ranked[0].file, ranked[0].line) == ("shop.py", BUGGY_LINE)
    assert all(s.file == "shop.py" for s in ranked)  # test files are the oracle, never suspects
    assert ranked[0].score > ranked[-1].score or len(ranked) == 1


def test_the_json_has_the_promised_fields(result):
    data = result.to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["failing"] == ["test_shop.py::test_shipping_at_the_threshold"] and data["passing"] == 5
    assert data["isolation"] == result.isolation and data["test_cmd"] == "pytest -q" and data["seconds"] > 0
    assert data["suspicious"][0] == {"file": "shop.py", "line": BUGGY_LINE, "score": data["suspicious"][0]["score"]}
    best = data["patches"][0]
    assert set(best) == {"file", "line", "diff", "fixed_tests", "size", "source", "operator"}
    assert (best["file"], best["line"], best["size"], best["source"]) == ("shop.py", BUGGY_LINE, 1, "mutation")
    assert best["fixed_tests"] == data["failing"] and "+    return total >= 50" in best["diff"]
    sizes = [p["size"] for p in data["patches"]]
    assert sizes == sorted(sizes)
    text = result.to_text()
    assert "1 failing, 5 passing" in text and f"shop.py:{BUGGY_LINE}" in text and best["diff"] in text


def test_every_patch_applies_with_git_apply_and_the_tests_then_pass(result, shop, tmp_path):
    assert result.patches
    for index, patch in enumerate(result.patches):
        repo = tmp_path / f"repo{index}"
        shutil.copytree(shop, repo)
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "-C", str(repo)]
        for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bug"]):
            subprocess.run([*git, *command], check=True)
        subprocess.run([*git, "apply", "--check", "-"], input=patch.diff, text=True, check=True)
        subprocess.run([*git, "apply", "-"], input=patch.diff, text=True, check=True)
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=repo,
                              capture_output=True, text=True, env={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
        assert done.returncode == 0, done.stdout


@pytest.mark.slow
def test_apply_writes_the_best_patch(tmp_path):
    project = write_project(tmp_path / "shop")
    found = debug(project, apply=True, max_patches=1)
    assert found.applied and (project / "shop.py").read_text().splitlines()[BUGGY_LINE - 1] == "    return total >= 50"
    assert debug(project).problem == "no test fails: nothing to debug"


def test_a_project_whose_tests_pass_gets_no_patch(tmp_path):
    fixed = write_project(tmp_path / "fixed", SHOP.replace("total > 50", "total >= 50"))
    found = debug(fixed)
    assert found.failing == [] and found.passing == 6 and found.patches == [] and found.suspicious == []


GREET = 'def greet(name):\n    return "Helo, " + name\n'
GREET_TESTS = 'from shop import greet\n\n\ndef test_greet():\n    assert greet("Ada") == "Hello, Ada"\n'


@pytest.mark.slow
def test_a_bug_no_single_edit_fixes_gets_no_patch(tmp_path):
    found = debug(write_project(tmp_path / "greet", GREET, GREET_TESTS))
    assert found.failing and found.patches == [] and found.suspicious[0].line == 2 and found.problem is None
    assert "no verified patch" in found.to_text()


@pytest.mark.slow
def test_the_model_is_asked_only_where_no_operator_helped_and_its_edit_only_counts_verified(tmp_path):
    shop = write_project(tmp_path / "shop")
    unused = ScriptedModel([])
    assert debug(shop, llm=unused).patches and unused.calls == []  # an operator fixed it: no model call
    greet = write_project(tmp_path / "greet", GREET, GREET_TESTS)
    wrong = ScriptedModel([{"file": "shop.py", "line": 2, "replacement": '    return "Hi, " + name'}])
    assert debug(greet, llm=wrong).patches == [] and len(wrong.calls) == 1
    right = ScriptedModel([{"file": "shop.py", "line": 2, "replacement": '    return "Hello, " + name'}])
    found = debug(greet, llm=right)
    assert [(p.source, p.operator, p.size) for p in found.patches] == [("model", "model edit", 1)]
    assert '+    return "Hello, " + name' in found.patches[0].diff
    schema = right.calls[0].options["json_schema"]
    assert schema["properties"]["file"]["enum"] == ["shop.py"] and schema["properties"]["line"]["enum"] == [2]
    assert '    return "Helo, " + name' in right.calls[0].prompt[0]["content"]


def test_a_hanging_test_is_reported_not_waited_for(tmp_path):
    project = write_project(tmp_path / "hang", SHOP, "import time\n\n\ndef test_hangs():\n    time.sleep(60)\n")
    found = debug(project, limits=Limits(wall_seconds=2.0))
    assert found.problem.startswith("the tests did not finish: timeout") and found.patches == []


@pytest.mark.slow
def test_bad_input_gets_a_clear_error(tmp_path):
    with pytest.raises(SandboxError, match="not a folder"):
        debug(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        debug(empty, test_cmd="  ")
    assert debug(empty).problem.startswith("no tests ran")
    broken = write_project(tmp_path / "broken", "def f(:\n", "from shop import f\n\n\ndef test_f():\n    f()\n")
    found = debug(broken)
    assert found.failing == ["test_shop.py"] and found.patches == [] and "SyntaxError" in found.messages["test_shop.py"]
