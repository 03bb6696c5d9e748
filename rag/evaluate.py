"""Retrieval evaluation: hit@1, hit@k and MRR of the retriever's modes on a hand-written question set.

Each question names the file and the page(s) that answer it (`rag/samples/questions.jsonl`, written by
hand over the sample PDFs beside it). A retrieved chunk is a hit when it comes from that
file and its page is one of those pages; a question's rank is that of its first hit among the top k
(none: a miss). hit@n is the share of questions ranked n or better; MRR is the mean of 1 / rank, a miss
counting 0.

Does not: judge answers (only whether the retriever surfaced the right page), or tune anything.
`python -m rag.evaluate` embeds the sample PDFs into a temporary collection and prints the table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rag import samples
from rag.collection import Collection
from rag.embeddings import PRECISIONS, Embedder, SentenceTransformerEmbedder
from rag.retriever import Hit, Mode, Retriever

MODES: tuple[Mode, ...] = ("dense", "bm25", "hybrid")
K = 5


@dataclass
class Question:
    id: str
    question: str
    file: str  # the file name, as in the collection
    pages: list[int]  # 1-based pages any of which answers it
    kind: str = ""  # "keyword" (shares words with the page) or "paraphrase" (says it differently)


def load_questions(path: str | Path = samples.QUESTIONS) -> list[Question]:
    """One JSON object a line; blank lines are skipped. ValueError names the line of a bad record."""
    questions = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            question = Question(**json.loads(line))
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{path}:{number}: not a question record ({e})") from e
        if not question.pages or not question.question.strip():
            raise ValueError(f"{path}:{number}: a question needs text and at least one answer page")
        questions.append(question)
    return questions


def first_hit(hits: Iterable[Hit], question: Question) -> int | None:
    """The 1-based rank of the first hit from the right file on an answer page, or None."""
    for rank, hit in enumerate(hits, start=1):
        if hit.chunk.file_name == question.file and hit.chunk.page in question.pages:
            return rank
    return None


def hit_at(ranks: list[int | None], n: int) -> float:
    """The share of questions whose first hit ranks n or better."""
    assert ranks, "no questions"
    return sum(rank is not None and rank <= n for rank in ranks) / len(ranks)


def mean_reciprocal_rank(ranks: list[int | None]) -> float:
    assert ranks, "no questions"
    return sum(1 / rank for rank in ranks if rank is not None) / len(ranks)


def metrics(ranks: list[int | None], k: int = K) -> dict[str, float]:
    return {"hit@1": hit_at(ranks, 1), f"hit@{k}": hit_at(ranks, k), "mrr": mean_reciprocal_rank(ranks)}


def ranks_by_mode(retriever: Retriever, questions: list[Question], k: int = K,
                  modes: Iterable[Mode] = MODES) -> dict[str, list[int | None]]:
    """Each mode's rank of every question (None: no hit in the top k), in question order."""
    return {mode: [first_hit(retriever.search(q.question, k=k, mode=mode), q) for q in questions] for mode in modes}


def evaluate(retriever: Retriever, questions: list[Question], k: int = K,
             modes: Iterable[Mode] = MODES) -> dict[str, dict[str, float]]:
    """{mode: {"hit@1", "hit@k", "mrr"}} over the top k of each mode."""
    return {mode: metrics(ranks, k) for mode, ranks in ranks_by_mode(retriever, questions, k, modes).items()}


def build_collection(data_dir: str | Path, embedder: Embedder, files: list[Path] = samples.PDFS,
                     name: str = "eval") -> Collection:
    """A collection of `files` under `data_dir`; raises if any file fails to load."""
    collection = Collection.open(name, data_dir=data_dir, embedder=embedder)
    bad = [f"{r.name}: {r.error}" for r in collection.add_files(files) if not r.ok]
    if bad:
        collection.close()
        raise ValueError(f"could not load {bad}")
    return collection


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """A markdown table, one row per (precision, mode)."""
    names = list(next(iter(next(iter(results.values())).values())))
    lines = ["| embedder | mode | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for precision, by_mode in results.items():
        for mode, values in by_mode.items():
            lines.append(f"| {precision} | {mode} | " + " | ".join(f"{values[n]:.3f}" for n in names) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default=",".join(PRECISIONS),
                        help=f"comma-separated embedder precisions (default: all of {', '.join(PRECISIONS)})")
    parser.add_argument("--k", type=int, default=K)
    parser.add_argument("--questions", default=str(samples.QUESTIONS))
    parser.add_argument("--misses", action="store_true", help="list the questions each mode misses")
    args = parser.parse_args()
    questions = load_questions(args.questions)
    results = {}
    for precision in args.precision.split(","):
        embedder = SentenceTransformerEmbedder(precision=precision)
        with tempfile.TemporaryDirectory() as data_dir:
            start = time.perf_counter()
            with build_collection(data_dir, embedder) as collection:
                ingest, chunks = time.perf_counter() - start, len(collection)
                ranks = ranks_by_mode(Retriever(collection), questions, args.k)
        results[precision] = {mode: metrics(r, args.k) for mode, r in ranks.items()}
        print(f"{precision}: {chunks} chunks ingested in {ingest:.1f} s")
        if args.misses:
            for mode, r in ranks.items():
                missed = [q.id for q, rank in zip(questions, r, strict=True) if rank is None]
                print(f"  {mode} misses {len(missed)}: {' '.join(missed)}")
    print(f"\n{len(questions)} questions, top {args.k}\n")
    print(table(results))


if __name__ == "__main__":
    main()
