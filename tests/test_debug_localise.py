"""Ochiai from per-test coverage, with the failing tracebacks as a prior: exact scores on a recorded spectrum."""

import math

import pytest
from coverage import CoverageData

from apps.code_review.localise import PRIOR_WEIGHT, SPECTRUM_WEIGHT, is_test_file, localise
from apps.code_review.sandbox import Completed
from apps.code_review.testrun import TestRun


def recorded(tmp_path, lines_by_test, outcomes, frames=None):
    """A TestRun whose coverage data says which lines of m.py each test ran."""
    data = CoverageData(basename=str(tmp_path / ".coverage"))
    for test, lines in lines_by_test.items():
        data.set_context(test)
        data.add_lines({str(tmp_path / "m.py"): lines, str(tmp_path / "test_m.py"): [1, 2]})
    data.write()
    return TestRun([], Completed(1, "", "", 0.1, False), outcomes, frames or {}, {}, tmp_path / ".coverage")


def test_ochiai_ranks_the_lines_only_failing_tests_run_first(tmp_path):
    run = recorded(tmp_path, {"t::fail": [1, 2, 3], "t::pass1": [1, 2], "t::pass2": [1]},
                   {"t::fail": "failed", "t::pass1": "passed", "t::pass2": "passed"})
    ranked = localise(run, tmp_path)
    assert [(s.file, s.line) for s in ranked] == [("m.py", 3), ("m.py", 2), ("m.py", 1)]  # never the test file
    assert ranked[0].score == pytest.approx(SPECTRUM_WEIGHT * 1.0)
    assert ranked[1].score == pytest.approx(SPECTRUM_WEIGHT / math.sqrt(2))
    assert ranked[2].score == pytest.approx(SPECTRUM_WEIGHT / math.sqrt(3))


def test_the_traceback_breaks_ties_and_ranks_lines_without_coverage(tmp_path):
    frames = {"t::fail": [("test_m.py", 2), ("m.py", 2), ("m.py", 5)]}  # innermost last
    run = recorded(tmp_path, {"t::fail": [1, 2, 3], "t::pass": [9]}, {"t::fail": "failed", "t::pass": "passed"},
                   frames)
    scores = {s.line: s.score for s in localise(run, tmp_path)}
    assert scores[2] == pytest.approx(SPECTRUM_WEIGHT + PRIOR_WEIGHT * 0.5)
    assert scores[5] == pytest.approx(PRIOR_WEIGHT * 1.0)  # the innermost frame, not covered (say, a C call)
    assert scores[3] == scores[1] == pytest.approx(SPECTRUM_WEIGHT)
    assert list(scores)[:3] == [2, 3, 1]  # ties: the later line first
    assert 9 not in scores  # only passing tests ran it


def test_nothing_is_suspicious_when_nothing_fails(tmp_path):
    assert localise(recorded(tmp_path, {"t::pass": [1]}, {"t::pass": "passed"}), tmp_path) == []


@pytest.mark.parametrize(("path", "test"), [("test_m.py", True), ("m_test.py", True), ("tests/helpers.py", True),
                                            ("conftest.py", True), ("pkg/m.py", False), ("testing.py", False)])
def test_test_files_are_the_oracle(path, test):
    assert is_test_file(path) is test
