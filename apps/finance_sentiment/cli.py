"""`llmkit sentiment`: score text or a news file, train the classifier, evaluate it on a labelled CSV.

Imported by the CLI to build its parser: nothing heavy at import (the classifier loads in `run`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from apps.finance_sentiment.classifier import LABELS, TRAIN_CSV, TWEET_CODES, WEIGHTS_DIR

WATCHLIST_HELP = "a company to look for besides the bundled table's (repeatable): fictional or unlisted names"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    score = actions.add_parser("score", help="score TEXT (a sentence or an article): label, probabilities, "
                               "companies, reasons")
    score.add_argument("text", help="the text, or - to read it from stdin")
    score.add_argument("--title", default="", help="the headline, weighed above the body")
    score.add_argument("--company", action="append", default=[], help=WATCHLIST_HELP)
    score.add_argument("--json", action="store_true", help="print one JSON object")
    file = actions.add_parser("file", help="score each item of a CSV/JSONL/RSS/Atom/HTML news file: one JSON "
                              "object per item with --json")
    file.add_argument("path")
    file.add_argument("--company", action="append", default=[], help=WATCHLIST_HELP)
    file.add_argument("--json", action="store_true", help="one JSON object per line")
    train = actions.add_parser("train", help="fine-tune the classifier (minutes on a laptop CPU) and write its "
                               f"weights (default: the shipped ones, {WEIGHTS_DIR.name}/)")
    train.add_argument("--data", type=Path, default=TRAIN_CSV, help=f"a CSV of text,label (default: {TRAIN_CSV.name}"
                       ", the tweet train split, plus the news-register templates)")
    train.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where to write the weights")
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--no-templates", action="store_true", help="train on --data alone")
    evaluate = actions.add_parser("evaluate", help="accuracy, macro-F1, the confusion matrix and calibration on a "
                                  "CSV with text and label columns")
    evaluate.add_argument("path")
    evaluate.add_argument("--text-column", default="text")
    evaluate.add_argument("--label-column", default="label")
    evaluate.add_argument("--codes", default="0=negative,1=positive,2=neutral",
                          help="what numeric labels mean (default: the tweet set's); word labels always work")
    evaluate.add_argument("--no-rule", action="store_true", help="the classifier alone, without the metric rule")
    evaluate.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="a trained weights folder")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> None:
    {"score": _score, "file": _file, "train": _train, "evaluate": _evaluate}[args.action](args)


def _article_json(article) -> dict:
    return {"label": article.label, "score": round(article.score, 4), "confidence": round(article.confidence, 4),
            "probabilities": article.probabilities,
            "companies": [{"company": c.company, "ticker": c.ticker, "score": round(c.score, 4), "label": c.label,
                           "sentences": c.sentences, "reason": c.reason} for c in article.companies],
            "sentences": [{"text": s.text, "label": s.label, "score": round(s.score, 4),
                           "probabilities": s.probabilities, "reasons": s.reasons} for s in article.sentences],
            "notes": article.notes}


def _score(args: argparse.Namespace) -> None:
    from apps.finance_sentiment.analysis import Analyzer

    text = sys.stdin.read() if args.text == "-" else args.text
    if not text.strip() and not args.title.strip():
        raise ValueError("nothing to score: the text is empty")
    article = Analyzer().article(text, title=args.title, watchlist=args.company)
    if args.json:
        print(json.dumps(_article_json(article), ensure_ascii=False))
        return
    print(f"{article.label} ({article.score:+.2f}, confidence {article.confidence:.2f})")
    for sentence in article.sentences:
        print(f"  [{sentence.label:>9} {sentence.score:+.2f}] {sentence.text}")
        for reason in sentence.reasons:
            print(f"      {reason}")
    for company in article.companies:
        print(f"{company.company}{f' ({company.ticker})' if company.ticker else ''}: {company.label} "
              f"{company.score:+.2f} from {company.sentences} sentence(s); {company.reason}")
    for note in article.notes:
        print(f"note: {note}", file=sys.stderr)


def _file(args: argparse.Namespace) -> None:
    from apps.finance_sentiment import news
    from apps.finance_sentiment.analysis import Analyzer

    read = news.read_file(Path(args.path))
    analyzer = Analyzer()
    for note in read.notes + read.skipped:
        print(f"note: {note}", file=sys.stderr)
    for item in news.merge_duplicates(read.items):
        try:
            article = analyzer.article(item.text, title=item.title, watchlist=args.company)
        except ValueError as error:  # this item only
            print(f"note: {item.title or item.text[:60]!r}: {error}", file=sys.stderr)
            continue
        record = {"title": item.title, "date": item.date.isoformat() if item.date else None,
                  "sources": item.sources, "url": item.url} | _article_json(article)
        if args.json:
            del record["sentences"]
            print(json.dumps(record, ensure_ascii=False), flush=True)
        else:
            names = ", ".join(f"{c.company} {c.score:+.2f}" for c in article.companies) or "no company found"
            print(f"{record['date'] or '-':>10}  {article.label:>8} {article.score:+.2f}  "
                  f"{(item.title or item.text)[:70]}  [{names}]")


def _train(args: argparse.Namespace) -> None:
    from apps.finance_sentiment import classifier, synthetic

    config = classifier.TrainConfig()
    if args.epochs is not None:
        config.epochs = args.epochs
    if args.seed is not None:
        config.seed = args.seed
    data = classifier.read_labelled(args.data)
    if not args.no_templates:
        templates = synthetic.sentences(config.templates, seed=config.seed)
        data.texts += [t for t, _ in templates]
        data.labels += [LABELS.index(label) for _, label in templates]
    description = f"{args.data.name}{'' if args.no_templates else f' + {config.templates} news-register templates'}"
    print(f"Training on {len(data.texts)} sentences ({description}).", flush=True)
    record = classifier.train(data, config, args.out, progress=sys.stderr.isatty(), description=description)
    print(f"Wrote {args.out} in {record['train_seconds']:.0f} s; temperature {record['temperature']}.")


def _codes(text: str) -> dict[str, str]:
    codes = {}
    for pair in text.split(","):
        code, _, label = pair.partition("=")
        if label.strip().lower() not in LABELS:
            raise ValueError(f"--codes: {pair!r} is not CODE=LABEL with a label among {', '.join(LABELS)}")
        codes[code.strip()] = label.strip().lower()
    return codes


def _evaluate(args: argparse.Namespace) -> None:
    import numpy as np

    from apps.finance_sentiment import classifier
    from apps.finance_sentiment.analysis import Analyzer
    from apps.finance_sentiment.evaluate import report

    codes = _codes(args.codes) if args.codes else TWEET_CODES
    data = classifier.read_labelled(Path(args.path), args.text_column, args.label_column, codes)
    analyzer = Analyzer(classifier.SentenceClassifier(args.weights), use_rule=not args.no_rule)
    scored = analyzer.score(data.texts)
    probabilities = np.array([[s.probabilities[name] for name in LABELS] for s in scored])
    result = report(data.labels, [s.label for s in scored], probabilities)
    if args.json:
        print(json.dumps(vars(result)))
    else:
        print(result.table())
