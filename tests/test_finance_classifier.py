"""The sentence classifier: LoRA merging, training and export round trip, the shipped model's calibration and
abstention, per-company scores in a two-company sentence, articles, and the `llmkit sentiment` command."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from apps.finance_sentiment import classifier
from apps.finance_sentiment.analysis import Analyzer, target_clauses
from apps.finance_sentiment.companies import find_companies

LLMKIT = Path(sys.executable).parent / "llmkit"
PAIR = "Kessler Brandt upgraded Harbor Bancorp to buy and downgraded Fallowmere Bank to sell, citing deposit flows."
WATCH = ["Harbor Bancorp", "Fallowmere Bank"]


def test_lora_merged_layer_computes_what_the_adapted_one_does():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=32))
    _, Classifier = classifier._modules()
    model = Classifier(encoder).eval()
    wrapped = classifier._adapted(model, rank=4, alpha=8.0)
    assert len(wrapped) == 2 * len(classifier.TARGETS)  # every target linear of both blocks
    for lora in wrapped.values():
        torch.nn.init.normal_(lora.b)  # trained: B is no longer zero
    ids = torch.randint(1, 50, (3, 7))
    mask = torch.ones_like(ids)
    adapted = model(ids, mask)
    for path, lora in wrapped.items():
        parent, _, name = path.rpartition(".")
        setattr(model.encoder.get_submodule(parent), name, lora.merged())
    torch.testing.assert_close(model(ids, mask), adapted, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(adapted, torch.zeros_like(adapted))


def test_labels_as_words_or_codes_and_a_bad_one_named(tmp_path):
    path = tmp_path / "set.csv"
    path.write_text("text,label\nProfit rose,Positive\nShares fell,0\nMeeting held,2\n", encoding="utf-8")
    assert classifier.read_labelled(path).labels == [2, 0, 1]
    path.write_text("text,label\nProfit rose,great\n", encoding="utf-8")
    with pytest.raises(ValueError, match="row 2: label 'great'"):
        classifier.read_labelled(path)
    with pytest.raises(ValueError, match="no column label"):
        path.write_text("text,sentiment\nx,1\n", encoding="utf-8")
        classifier.read_labelled(path)


def test_control_tokens_written_in_a_text_stay_text():
    _, path = classifier._embedded_tokenizer()
    ids, mask = classifier._batch(classifier._tokenizer(path, 64), ["Profit [SEP] rose [CLS] [PAD] [MASK]"])
    special = {101, 102, 0, 103}  # [CLS], [SEP], [PAD], [MASK] in all-MiniLM-L6-v2's vocabulary
    assert ids[0, 0] == 101 and ids[0, mask[0].sum() - 1] == 102  # the model's own, at the ends
    assert not special & set(ids[0, 1: mask[0].sum() - 1].tolist())


def test_target_clauses_give_each_company_its_own_news():
    mentions = find_companies(PAIR, watchlist=WATCH)
    assert target_clauses(PAIR, mentions, "Harbor Bancorp") == "Kessler Brandt upgraded Harbor Bancorp to buy"
    # the clause without a name ("citing deposit flows") belongs to the company named before it
    assert target_clauses(PAIR, mentions, "Fallowmere Bank") == ("and downgraded Fallowmere Bank to sell "
                                                                "citing deposit flows.")
    one = "Harbor Bancorp raised its dividend, citing strong deposits."
    assert target_clauses(one, find_companies(one, watchlist=WATCH), "Harbor Bancorp") == one


@pytest.mark.slow
def test_training_saving_and_int8_export_round_trip(tmp_path):
    data = classifier.read_labelled(classifier.TRAIN_CSV)
    small = classifier.Labelled(data.texts[:96], data.labels[:96])
    config = classifier.TrainConfig(epochs=1, batch_size=16)
    record = classifier.train(small, config, tmp_path, progress=False, description="96 rows")
    assert record["train_rows"] + record["calibration_rows"] == 96 and record["temperature"] > 0
    texts = data.texts[200:260]
    exact = classifier.SentenceClassifier(tmp_path, precision="float32")
    int8 = classifier.SentenceClassifier(tmp_path, precision="int8")
    p32, p8 = exact.probabilities(texts), int8.probabilities(texts)
    assert np.allclose(p32.sum(1), 1) and (p32.argmax(1) == p8.argmax(1)).mean() >= 0.9
    assert np.abs(p32 - p8).max() < 0.2
    # a batch gives each text what it gets alone (padding is masked)
    assert np.allclose(exact.logits(texts[:5]), np.concatenate([exact.logits([t]) for t in texts[:5]]), atol=1e-4)


@pytest.fixture(scope="module")
def shipped():
    return classifier.SentenceClassifier()


@pytest.mark.slow
def test_shipped_model_is_calibrated_and_abstains_below_its_threshold(shipped):
    valid = classifier.read_labelled(classifier.VALID_CSV)
    texts, gold = valid.texts[::3], np.array(valid.labels[::3])  # 796 rows
    probabilities = shipped.probabilities(texts)
    assert classifier.expected_calibration_error(probabilities, gold) <= 0.05
    assert (probabilities.argmax(1) == gold).mean() >= 0.82
    predictions = [shipped.prediction(row) for row in probabilities]
    uncertain = np.array([p.label == "uncertain" for p in predictions])
    assert (uncertain == (probabilities.max(1) < shipped.threshold)).all() and 0 < uncertain.mean() < 0.2
    sure_accuracy = (probabilities.argmax(1) == gold)[~uncertain].mean()
    assert sure_accuracy > (probabilities.argmax(1) == gold)[uncertain].mean() + 0.2
    # a higher threshold abstains more
    strict = classifier.SentenceClassifier(threshold=0.8)
    assert sum(strict.prediction(row).label == "uncertain" for row in probabilities) > uncertain.sum()


@pytest.mark.slow
def test_two_companies_in_one_sentence_get_opposite_scores(shipped):
    analyzer = Analyzer(shipped)
    scores = analyzer.company_sentences(PAIR, find_companies(PAIR, watchlist=WATCH))
    assert scores["Harbor Bancorp"].score > 0.2 and scores["Fallowmere Bank"].score < -0.2
    article = analyzer.article(PAIR + " Fallowmere shares fell 6% in early trading.",
                               title="Broker splits on two regional lenders", watchlist=WATCH)
    by_name = {c.company: c for c in article.companies}
    assert by_name["Harbor Bancorp"].label == "positive" and by_name["Fallowmere Bank"].label == "negative"
    assert by_name["Fallowmere Bank"].sentences == 2  # the short form in the second sentence counts
    assert article.sentences[0].weight == 2.0 and article.sentences[0].text.startswith("Broker")


@pytest.mark.slow
def test_factual_good_news_reads_positive_with_the_rule_as_reason(shipped):
    result = Analyzer(shipped).score(["Northwind Logistics said operating profit rose to EUR 13.1 mn from EUR 8.7 mn."])
    assert result[0].label == "positive"
    assert any("operating profit up" in reason for reason in result[0].reasons)


@pytest.mark.slow
def test_bad_and_odd_input_gives_a_result_or_a_clear_error(shipped):
    analyzer = Analyzer(shipped)
    with pytest.raises(ValueError, match="no text"):
        analyzer.article("   \n ")
    huge = ("Revenue rose. " * 80_000)  # 1.1 MB
    article = analyzer.article(huge)
    assert len(article.sentences) == 400 and "only the first 100,000 of 1,120,000 characters" in article.notes[0]
    assert "only the first 400 sentences" in article.notes[1]
    long_one = analyzer.score(["The meeting is on Tuesday " * 40_000 + "after the fraud."])[0]  # 1 MB, one text
    assert not any("fraud" in reason for reason in long_one.reasons)  # read no further than the classifier
    odd = ("Die Aktie fiel um 5 Prozent.", "株価は5%下落した。", "\x00\x01binary\xff", "<p>Profit <b>rose</b></p>")
    for text in odd:
        assert analyzer.article(text).label in ("negative", "neutral", "positive")


@pytest.mark.slow
def test_the_sentiment_command(tmp_path):
    out = subprocess.run([str(LLMKIT), "sentiment", "score", PAIR, "--company", "Harbor Bancorp", "--company",
                          "Fallowmere Bank", "--json"], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert {c["company"]: c["label"] for c in result["companies"]} == {"Harbor Bancorp": "positive",
                                                                      "Fallowmere Bank": "negative"}
    assert set(result["probabilities"]) == set(classifier.LABELS) and out.stderr == ""
    labelled = tmp_path / "set.csv"
    labelled.write_text("text,label\nOperating profit rose to EUR 9 mn from EUR 5 mn.,positive\n"
                        "The company swung to a net loss and cut its dividend.,negative\n"
                        "The annual meeting will be held on May 12.,neutral\n", encoding="utf-8")
    out = subprocess.run([str(LLMKIT), "sentiment", "evaluate", str(labelled), "--json"], capture_output=True,
                         text=True, check=True)
    report = json.loads(out.stdout)
    assert report["rows"] == 3 and report["accuracy"] >= 2 / 3 and len(report["confusion"]) == 3
    news = tmp_path / "news.jsonl"
    news.write_text(json.dumps({"text": "Harbor Bancorp raised its dividend by 10%.", "date": "2026-03-02"}) + "\n"
                    + "not json\n", encoding="utf-8")
    out = subprocess.run([str(LLMKIT), "sentiment", "file", str(news), "--json", "--company", "Harbor Bancorp"],
                         capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 1 and lines[0]["date"] == "2026-03-02" and lines[0]["companies"][0]["score"] > 0
    assert "line 2" in out.stderr
    failed = subprocess.run([str(LLMKIT), "sentiment", "score", " "], capture_output=True, text=True)
    assert failed.returncode == 1 and "llmkit: nothing to score" in failed.stderr
