"""Financial sentiment: accuracy, macro-F1, calibration and sentences/s of our classifier beside the references.

Two sets: the tweet set's held-out valid split (data/financial-sentiment/sent_valid.csv, 2,388 rows) and the
frozen news-register development set (data/finance-news-dev, 199 hand-written rows, each labelled for one named
company). References, fit on the tweet train split in this run: the majority class, FinVADER with its two
thresholds fit for macro-F1, TF-IDF 1-2-grams + logistic regression. Ours: the shipped classifier alone (int8
and float32), with the metric rule, and (development set) each company scored on its own clauses — the
app's path. Ratios are against TF-IDF + LR measured here. "single": one sentence per call.

Run: .venv/bin/python -m bench.sentiment
"""

from __future__ import annotations

import csv
import json
import time

import numpy as np

from apps.finance_sentiment import classifier, lexicons
from apps.finance_sentiment.evaluate import report
from bench import results

DEV_CSV = results.ROOT / "data" / "finance-news-dev" / "sentences.csv"
SINGLE = 200  # sentences timed one call each


def dev_set() -> tuple[classifier.Labelled, list[str]]:
    with open(DEV_CSV, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return (classifier.Labelled([r["text"] for r in rows], [classifier.LABELS.index(r["label"]) for r in rows]),
            [r["company"] for r in rows])


def timed(predict, texts: list[str]) -> tuple[list[str], np.ndarray | None, float, float]:
    """(labels, probabilities or None, sentences/s in one batch, sentences/s one at a time)."""
    started = time.perf_counter()
    labels, probabilities = predict(texts)
    batch = len(texts) / (time.perf_counter() - started)
    started = time.perf_counter()
    for text in texts[:SINGLE]:
        predict([text])
    return labels, probabilities, batch, min(SINGLE, len(texts)) / (time.perf_counter() - started)


def references(train: classifier.Labelled) -> dict:
    """name -> (predict(texts) -> (labels, None), train seconds)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from apps.finance_sentiment.evaluate import macro_f1

    majority = classifier.LABELS[int(np.bincount(train.labels).argmax())]
    started = time.perf_counter()
    scores = np.array([lexicons.finvader(t) for t in train.texts])
    gold = np.array(train.labels)
    grid = np.linspace(-0.8, 0.8, 33)

    def thresholded(values, low, high):
        return np.where(values < low, 0, np.where(values > high, 2, 1))

    low, high = max(((lo, hi) for lo in grid for hi in grid if hi > lo),
                    key=lambda t: macro_f1(gold, thresholded(scores, *t)))
    finvader_seconds = time.perf_counter() - started
    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(max_iter=2000, C=10).fit(vectorizer.fit_transform(train.texts), train.labels)
    tfidf_seconds = time.perf_counter() - started
    return {
        "majority class": (lambda texts: ([majority] * len(texts), None), 0.0),
        f"FinVADER (thresholds {low:.2f}, {high:.2f})": (
            lambda texts: ([classifier.LABELS[i] for i in
                            thresholded(np.array([lexicons.finvader(t) for t in texts]), low, high)], None),
            finvader_seconds),
        "TF-IDF 1-2-grams + LR": (
            lambda texts: ([classifier.LABELS[i] for i in model.predict(vectorizer.transform(texts))], None),
            tfidf_seconds),
    }


def ours(analyzer) -> callable:
    def predict(texts):
        scored = analyzer.score(texts)
        return [s.label for s in scored], np.array([[s.probabilities[n] for n in classifier.LABELS] for s in scored])
    return predict


def per_company(analyzer, companies: list[str]):
    """The app's path on the development set: each row's company scored on its own clauses."""
    from apps.finance_sentiment.companies import find_companies

    def predict(texts):
        scored = []
        for text, company in zip(texts, companies, strict=False):
            mentions = find_companies(text, watchlist=[company] if company else [])
            found = analyzer.company_sentences(text, mentions).get(company) if company else None
            scored.append(found or analyzer.score([text])[0])
        return [s.label for s in scored], np.array([[s.probabilities[n] for n in classifier.LABELS] for s in scored])
    return predict


def main() -> None:
    parser = results.parser("sentiment", __doc__)
    parser.parse_args()
    from apps.finance_sentiment.analysis import Analyzer

    train = classifier.read_labelled(classifier.TRAIN_CSV)
    sets = {"valid": (classifier.read_labelled(classifier.VALID_CSV), None), "news": dev_set()}
    methods = {name: (predict, seconds) for name, (predict, seconds) in references(train).items()}
    int8 = classifier.SentenceClassifier(precision="int8")
    record = int8.record
    ours_seconds = record["train_seconds"]
    methods["ours: classifier, int8"] = (ours(Analyzer(int8, use_rule=False)), ours_seconds)
    methods["ours: classifier, float32"] = (ours(Analyzer(classifier.SentenceClassifier(precision="float32"),
                                                          use_rule=False)), ours_seconds)
    methods["ours: classifier + rule, int8 (the app)"] = (ours(Analyzer(int8)), ours_seconds)
    rows = []
    for name, (predict, seconds) in methods.items():
        row = {"method": name, "train_s": round(seconds, 1)}
        for set_name, (data, companies) in sets.items():
            use = predict
            if set_name == "news" and name.endswith("(the app)"):
                use = per_company(Analyzer(int8), companies)
            labels, probabilities, batch, single = timed(use, data.texts)
            metrics = report(data.labels, labels, probabilities)
            row |= {f"{set_name}_accuracy": metrics.accuracy, f"{set_name}_macro_f1": metrics.macro_f1,
                    f"{set_name}_ece": metrics.ece, f"{set_name}_coverage": metrics.coverage,
                    f"{set_name}_confusion": metrics.confusion}
            if set_name == "valid":
                row |= {"batch_per_s": batch, "single_per_s": single}
        rows.append(row)
        print(json.dumps(row))
    reference = next(r for r in rows if r["method"].startswith("TF-IDF"))
    lines = ["| method | valid accuracy | valid macro-F1 | news accuracy | news macro-F1 | accuracy / TF-IDF "
             "(valid, news) | ECE (valid, news) | not uncertain (valid) | sentences/s batch | single | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ece = f"{r['valid_ece']:.3f}, {r['news_ece']:.3f}" if r["valid_ece"] is not None else "—"
        coverage = f"{r['valid_coverage']:.3f}" if r["valid_ece"] is not None else "—"
        speed = (f"{r['batch_per_s']:.0f} | {r['single_per_s']:.0f}" if not r["method"].startswith("majority")
                 else "— | —")
        lines.append(f"| {r['method']} | {r['valid_accuracy']:.3f} | {r['valid_macro_f1']:.3f} "
                     f"| {r['news_accuracy']:.3f} | {r['news_macro_f1']:.3f} "
                     f"| {r['valid_accuracy'] / reference['valid_accuracy']:.2f}x, "
                     f"{r['news_accuracy'] / reference['news_accuracy']:.2f}x | {ece} | {coverage} "
                     f"| {speed} | {r['train_s']} |")
    config = record["config"]
    note = (f"Accuracy, macro-F1 and the confusion matrices (JSON) are of the top label; \"not uncertain\" is the "
            f"share of rows whose top probability reaches {config['threshold']} (below it the app says uncertain). "
            "Sentences/s: ours include the rule and the lexicon reasons where the rule is on; \"single\" is one "
            "sentence per call. Ours: all-MiniLM-L6-v2 with LoRA rank "
            f"{config['rank']}, {config['epochs']} epochs, seed {config['seed']}, temperature "
            f"{record['temperature']} fit on {record['calibration_rows']} held-out training rows; trained on "
            f"{record['train_rows']} rows ({record.get('train_data', 'the tweet train split')}). "
            "Targets (issue 15): ≥ 0.87 valid accuracy, ≥ 0.85 news accuracy, ECE ≤ 0.05, ≥ 500 sentences/s.")
    results.write("sentiment", "Financial sentiment: ours beside the references", note + "\n\n" + "\n".join(lines),
                  {"rows": rows, "classifier": record})


if __name__ == "__main__":
    main()
