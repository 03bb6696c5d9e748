"""Accuracy, macro-F1, the confusion matrix and calibration of predictions against gold labels.

Used by `llmkit sentiment evaluate FILE.csv` and bench/sentiment.py. Accuracy, macro-F1 and the confusion
matrix are of the top label (an "uncertain" outcome counts as its most probable label); abstention is reported
beside them: the coverage (the share not "uncertain") and the accuracy on that share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apps.finance_sentiment.classifier import LABELS, expected_calibration_error


@dataclass
class Report:
    rows: int
    accuracy: float
    macro_f1: float
    confusion: list[list[int]]  # [gold][predicted], LABELS order
    ece: float | None  # expected calibration error, when probabilities were given
    coverage: float  # share of rows not "uncertain"
    accuracy_when_sure: float  # accuracy on those rows

    def table(self) -> str:
        lines = [f"rows {self.rows}  accuracy {self.accuracy:.3f}  macro-F1 {self.macro_f1:.3f}"
                 + (f"  ECE {self.ece:.3f}" if self.ece is not None else "")
                 + f"  coverage {self.coverage:.3f} (accuracy there {self.accuracy_when_sure:.3f})",
                 "gold \\ predicted  " + "  ".join(f"{name:>8}" for name in LABELS)]
        for name, row in zip(LABELS, self.confusion, strict=True):
            lines.append(f"{name:>16}  " + "  ".join(f"{n:>8}" for n in row))
        return "\n".join(lines)


def macro_f1(gold: np.ndarray, predicted: np.ndarray) -> float:
    scores = []
    for label in range(len(LABELS)):
        tp = int(((predicted == label) & (gold == label)).sum())
        fp = int(((predicted == label) & (gold != label)).sum())
        fn = int(((predicted != label) & (gold == label)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


def report(gold: list[int], predicted: list[str], probabilities: np.ndarray | None = None) -> Report:
    """`predicted` labels are LABELS or "uncertain" (which needs `probabilities`); `gold` indexes into LABELS."""
    gold_array = np.array(gold)
    sure = np.array([p != "uncertain" for p in predicted])
    if probabilities is not None:
        as_index = probabilities.argmax(axis=1)
    else:
        as_index = np.array([LABELS.index(p) if p != "uncertain" else -1 for p in predicted])
    confusion = [[int(((gold_array == g) & (as_index == p)).sum()) for p in range(len(LABELS))]
                 for g in range(len(LABELS))]
    correct = as_index == gold_array
    when_sure = (np.array([LABELS.index(p) if p != "uncertain" else -1 for p in predicted]) == gold_array)[sure]
    return Report(
        rows=len(gold), accuracy=float(correct.mean()), macro_f1=macro_f1(gold_array, as_index),
        confusion=confusion,
        ece=None if probabilities is None else expected_calibration_error(probabilities, gold_array),
        coverage=float(sure.mean()), accuracy_when_sure=float(when_sure.mean()) if sure.any() else 0.0)
