"""The mutation operators, one line at a time (no test runs): each class of bug yields its fix as a candidate, and
the diffs are minimal and apply."""

import subprocess

import pytest

from apps.code_review.mutations import change_size, mutants
from apps.code_review.repair import unified_diff

CASES = [  # (source, line, the fixed line, operator)
    ("def f(age):\n    return age > 18\n", 2, "    return age >= 18", "comparison"),
    ("def f(x, lo, hi):\n    return lo <= x or x <= hi\n", 2, "    return lo <= x and x <= hi", "boolean"),
    ("def f(xs):\n    return sum(xs) * len(xs)\n", 2, "    return sum(xs) / len(xs)", "arithmetic"),
    ("def f(t, p):\n    t -= p\n    return t\n", 2, "    t += p", "arithmetic"),
    ("def f(n):\n    return list(range(n))\n", 2, "    return list(range(n + 1))", "off-by-one"),
    ("def f(xs):\n    return xs[len(xs)]\n", 2, "    return xs[len(xs) - 1]", "off-by-one"),
    ("def f(xs, n):\n    return xs[len(xs) - n + 1:]\n", 2, "    return xs[len(xs) - n:]", "off-by-one"),
    ("def f(xs):\n    return xs[1:-1]\n", 2, "    return xs[1:]", "slice"),
    ("def f(a, b):\n    return g(b, a)\n", 2, "    return g(a, b)", "swapped arguments"),
    ("def f(a, b):\n    return b - a\n", 2, "    return a - b", "swapped arguments"),
    ("def f(a, b):\n    if a > b:\n        return a\n    return a\n", 4, "    return b", "wrong variable"),
    ("def f(s):\n    s.strip()\n", 2, "    return s.strip()", "missing return"),
    ("def f(xs):\n    for x in xs:\n        return x\n    return None\n", 3, "        pass", "extra return"),
    ("def f(s):\n    if s.isidentifier():\n        return 1\n    return 0\n", 2, "    if not s.isidentifier():",
     "negated condition"),
    ("def f(i, xs):\n    while i < len(xs) and xs[i]:\n        i += 1\n    return i\n", 2,
     "    while i < len(xs) and not xs[i]:", "negated condition"),
    ("def f(x):\n    return x + 2\n", 2, "    return x + 1", "constant"),
    ("def f():\n    return True\n", 2, "    return False", "constant"),
]


@pytest.mark.parametrize(("source", "line", "fixed", "operator"), CASES, ids=[c[3] for c in CASES])
def test_each_operator_proposes_the_fix(source, line, fixed, operator):
    found = {c.text.splitlines()[line - 1]: c for c in mutants(source, "m.py", line, 0)}
    assert fixed in found, sorted(found)
    assert found[fixed].operator == operator and found[fixed].size == change_size(source.splitlines()[line - 1], fixed)


def test_a_missing_return_after_the_last_line():
    source = "def f(xs):\n    total = 0\n    for x in xs:\n        total += x\n"
    texts = [c.text for c in mutants(source, "m.py", 4, 0) if c.operator == "missing return"]
    assert source + "    return total\n" in texts


def test_mutants_parse_are_distinct_and_come_smallest_first():
    source = "def f(a, b, c):\n    if a < b and b <= c:\n        return a * (b + 1)\n    return c\n"
    found = [c for line in (2, 3) for c in mutants(source, "m.py", line, 0)]
    assert len({c.text for c in found}) == len(found) > 20
    for line in (2, 3):
        sizes = [c.size for c in found if c.line == line]
        assert sizes == sorted(sizes)
    assert mutants("def f(:\n", "m.py", 1, 0) == [] and mutants(source, "m.py", 99, 0) == []


@pytest.mark.parametrize("ending", ["\n", ""])
def test_the_diff_applies_with_git_apply(tmp_path, ending):
    old = "a = 1\nb = 2\nc = a > b" + ending
    new = "a = 1\nb = 2\nc = a >= b" + ending
    (tmp_path / "m.py").write_text(old)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    diff = unified_diff("m.py", old, new)
    subprocess.run(["git", "-C", str(tmp_path), "apply", "-"], input=diff, text=True, check=True)
    assert (tmp_path / "m.py").read_text() == new
