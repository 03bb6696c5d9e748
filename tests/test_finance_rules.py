"""The metric rule (direction × whether more of the metric is good), the lexicons, the news-register templates
and the evaluation arithmetic: no model."""

import numpy as np
import pytest

from apps.finance_sentiment import lexicons, synthetic
from apps.finance_sentiment.classifier import LABELS, expected_calibration_error, fit_temperature, softmax
from apps.finance_sentiment.evaluate import report
from apps.finance_sentiment.rules import metric_changes, rule_effect


@pytest.mark.parametrize("sentence, effect", [
    ("Operating profit rose to EUR 13.1 mn from EUR 8.7 mn a year earlier.", 1),
    ("Net sales fell 12% in the quarter.", -1),
    ("The company's net loss narrowed to USD 3.2 mn from USD 7.9 mn.", 1),
    ("Its net loss widened to USD 7.9 mn.", -1),
    ("Operating expenses increased 18% as the company hired more staff.", -1),
    ("Costs were down 5% on the year.", 1),
    ("Revenue of EUR 5 mn, up from EUR 4 mn a year ago.", 1),
    ("The group reported a 40% drop in operating profit.", -1),
    ("Higher costs weighed on the group.", -1),
    ("The board raised its full-year guidance.", 1),
    ("Order intake from 120 mn to 95 mn.", -1),  # figures alone give the direction
])
def test_metric_changes_give_the_shareholders_view(sentence, effect):
    found, changes = rule_effect(sentence)
    assert found == effect, changes
    assert changes and all(c.evidence in sentence for c in changes)
    assert ("good" if effect > 0 else "bad") in changes[0].reason


@pytest.mark.parametrize("sentence", [
    "The company will report results on Thursday.",  # no metric moved
    "Revenue failed to rise in the quarter.",  # negated
    "Revenue rose 5% but fell short of what analysts had expected.",  # weighed against something else
    "Revenue rose while costs rose faster.",  # mixed: cancels
    "Profit rose to EUR 9 mn from EUR 12 mn.",  # the words and the figures disagree
])
def test_the_rule_stays_out_of_what_it_cannot_decide(sentence):
    assert rule_effect(sentence)[0] == 0


def test_a_direction_belongs_to_the_nearest_metric():
    changes = metric_changes("Revenue jumped 20% and costs fell 3%.")
    assert [(c.metric, c.direction, c.effect) for c in changes] == [("Revenue", 1, 1), ("costs", -1, 1)]


def test_lexicon_hits_are_the_words_as_written():
    hits = lexicons.lm_hits("The FRAUD caused losses, but the outlook improved; Losses again.")
    assert hits.negative == ("FRAUD", "losses")
    assert hits.positive == ("improved",)
    assert lexicons.lm_hits("The meeting is on Tuesday.") == lexicons.LexiconHits((), ())


def test_finvader_reads_finance_words():
    assert lexicons.finvader("Profit rose strongly, a great result.") > 0.3
    assert lexicons.finvader("Losses widened and the outlook deteriorated.") < -0.3


def test_templates_are_deterministic_unique_and_labelled():
    first, again = synthetic.sentences(300, seed=3), synthetic.sentences(300, seed=3)
    assert first == again and len({s for s, _ in first}) == 300
    assert {label for _, label in first} == set(LABELS)
    assert synthetic.sentences(300, seed=4) != first
    # A template's label agrees with the rule wherever the rule decides.
    for sentence, label in first:
        effect = rule_effect(sentence)[0]
        if effect:
            assert label == ("positive" if effect > 0 else "negative"), sentence


def test_temperature_fit_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(4000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits, 2.0)])
    assert fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.1)


def test_calibration_error_by_hand():
    # Two bins: confidence 0.9 (2 rows, 1 right) and 0.6 (2 rows, 2 right): ECE = ½·|0.5−0.9| + ½·|1−0.6| = 0.4.
    probabilities = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.2, 0.6, 0.2], [0.2, 0.6, 0.2]])
    assert expected_calibration_error(probabilities, np.array([0, 1, 1, 1])) == pytest.approx(0.4)


def test_report_counts_uncertain_at_its_top_label_and_reports_coverage():
    probabilities = np.array([[0.8, 0.1, 0.1], [0.4, 0.35, 0.25], [0.1, 0.2, 0.7], [0.1, 0.6, 0.3]])
    result = report([0, 1, 2, 2], ["negative", "uncertain", "positive", "neutral"], probabilities)
    assert result.accuracy == 0.5 and result.coverage == 0.75
    assert result.accuracy_when_sure == pytest.approx(2 / 3)
    assert result.confusion == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert result.macro_f1 == pytest.approx(np.mean([2 / 3, 0.0, 2 / 3]))
