"""Retrieval evaluation: hit@1, hit@k and MRR of the retriever's modes on a hand-written question set.

Each question names the file and the page(s) that answer it, and a short gold answer: a string found verbatim
on one of those pages that a correct answer must contain. A retrieved chunk is a hit when it comes from that
file and its page is one of those pages; a question's rank is that of its first hit among the top k
(none: a miss). hit@n is the share of questions ranked n or better; MRR is the mean of 1 / rank, a miss
counting 0; doc@1 is the share of questions whose top chunk comes from the right file (with many similar
documents, finding the document is half the battle).

Two sets, both frozen (written before any retrieval run, never tuned to the retriever):
- demo (the default): `rag/samples/questions.jsonl`, 66 questions over the two sample PDFs beside it.
- filings: `rag/samples/filings_questions.jsonl`, questions over 11 public company filings (10-Ks, a 10-Q,
  earnings releases) that are not shipped: they live in the shared data (FILINGS_DIR, or --pdfs DIR).
  Questions name a company, a period and a metric; the answering page is often a table that names none.

Does not: judge answers (only whether the retriever surfaced the right page), or tune anything.
`python -m rag.evaluate [--set filings]` embeds the set's PDFs into one temporary collection (or, with
--keep DIR, one kept there and reused by later runs) and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
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
# The filings are development data, not the product's: they sit beside the repository, in the shared data.
FILINGS_DIR = Path(__file__).parents[2] / "shared/data/pdfs/filings"
SETS = ("demo", "filings")


@dataclass
class Question:
    id: str
    question: str
    file: str  # the file name, as in the collection
    pages: list[int]  # 1-based pages any of which answers it
    kind: str = ""  # demo: "keyword" or "paraphrase"; filings: "metric", "narrative", "period" or "comparison"
    answer: str = ""  # a short string, verbatim on an answer page, that a correct answer must contain


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


def document_hit_at_1(hits: list[list[Hit]], questions: list[Question]) -> float:
    """The share of questions whose top hit comes from the right file (whatever its page)."""
    assert questions, "no questions"
    right = sum(bool(found) and found[0].chunk.file_name == q.file for found, q in zip(hits, questions, strict=True))
    return right / len(questions)


def hits_by_mode(retriever: Retriever, questions: list[Question], k: int = K,
                 modes: Iterable[Mode] = MODES) -> dict[str, list[list[Hit]]]:
    """Each mode's top k hits for every question, in question order."""
    return {mode: [retriever.search(q.question, k=k, mode=mode) for q in questions] for mode in modes}


def ranks_by_mode(retriever: Retriever, questions: list[Question], k: int = K,
                  modes: Iterable[Mode] = MODES) -> dict[str, list[int | None]]:
    """Each mode's rank of every question (None: no hit in the top k), in question order."""
    return {mode: [first_hit(h, q) for h, q in zip(hits, questions, strict=True)]
            for mode, hits in hits_by_mode(retriever, questions, k, modes).items()}


def evaluate(retriever: Retriever, questions: list[Question], k: int = K,
             modes: Iterable[Mode] = MODES) -> dict[str, dict[str, float]]:
    """{mode: {"hit@1", "hit@k", "mrr"}} over the top k of each mode."""
    return {mode: metrics(ranks, k) for mode, ranks in ranks_by_mode(retriever, questions, k, modes).items()}


def build_collection(data_dir: str | Path, embedder: Embedder, files: list[Path] = samples.PDFS,
                     name: str = "eval", contextual: bool = True) -> Collection:
    """A collection of `files` under `data_dir`, chunks indexed with their context unless not `contextual`
    (rag.context); raises if any file fails to load."""
    collection = Collection.open(name, data_dir=data_dir, embedder=embedder)
    if collection.contextual != contextual:
        collection.set_contextual(contextual)
    bad = [f"{r.name}: {r.error}" for r in collection.add_files(files) if not r.ok]
    if bad:
        collection.close()
        raise ValueError(f"could not load {bad}")
    return collection


def keep_collection(data_dir: str | Path, embedder: Embedder, files: list[Path], name: str,
                    contextual: bool = True) -> Collection:
    """The collection `name` under `data_dir` holding `files`: those it lacks (by file name) are added (as
    `build_collection` does), so a kept collection is ingested once and reused by later runs. Raises if any
    file fails to load."""
    collection = Collection.open(name, data_dir=data_dir, embedder=embedder)
    present = {document.file_name for document in collection.documents()}
    missing = [path for path in files if path.name not in present]
    if missing:
        collection.close()
        return build_collection(data_dir, embedder, missing, name, contextual)
    return collection


def set_files(name: str, pdfs: str | Path | None, questions: list[Question]) -> list[Path]:
    """The PDFs a question set runs on; for filings, those in `pdfs` (default FILINGS_DIR), which must hold
    every file a question names (ValueError saying what is missing)."""
    if name == "demo":
        return samples.PDFS
    folder = Path(pdfs) if pdfs else FILINGS_DIR
    if not folder.is_dir():
        raise ValueError(f"the filings PDFs are not in {folder} (a folder of the shared data, not shipped with "
                         "llmkit): pass --pdfs DIR, the folder that holds them")
    files = sorted(folder.glob("*.pdf"))
    lacking = sorted({q.file for q in questions} - {path.name for path in files})
    if lacking:
        raise ValueError(f"{folder} lacks {len(lacking)} file(s) the questions ask about: {', '.join(lacking)}")
    return files


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
    parser.add_argument("--set", choices=SETS, default="demo",
                        help="demo: the sample PDFs (default); filings: 11 company filings from the shared data")
    parser.add_argument("--pdfs", help=f"the folder of the filings PDFs (default: {FILINGS_DIR})")
    parser.add_argument("--keep", metavar="DIR",
                        help="keep the ingested collection in DIR and reuse it on later runs (else a temporary one)")
    parser.add_argument("--precision", default=",".join(PRECISIONS),
                        help=f"comma-separated embedder precisions (default: all of {', '.join(PRECISIONS)})")
    parser.add_argument("--k", type=int, default=K)
    parser.add_argument("--questions", help="a question file (default: the set's)")
    parser.add_argument("--misses", action="store_true", help="list the questions each mode misses")
    args = parser.parse_args()
    default = samples.QUESTIONS if args.set == "demo" else samples.FILINGS_QUESTIONS
    questions = load_questions(args.questions or default)
    try:
        files = set_files(args.set, args.pdfs, questions)
    except ValueError as e:
        parser.error(str(e))
    results = {}
    for precision in args.precision.split(","):
        embedder = SentenceTransformerEmbedder(precision=precision)
        with contextlib.ExitStack() as stack:
            data_dir = args.keep or stack.enter_context(tempfile.TemporaryDirectory())
            start = time.perf_counter()
            collection = stack.enter_context(keep_collection(data_dir, embedder, files, f"eval-{args.set}-{precision}"))
            ingest, chunks = time.perf_counter() - start, len(collection)
            hits = hits_by_mode(Retriever(collection), questions, args.k)
        ranks = {mode: [first_hit(h, q) for h, q in zip(found, questions, strict=True)] for mode, found in hits.items()}
        results[precision] = {mode: metrics(ranks[mode], args.k) | {"doc@1": document_hit_at_1(found, questions)}
                              for mode, found in hits.items()}
        print(f"{precision}: {chunks} chunks from {len(files)} files, ready in {ingest:.1f} s")
        if args.misses:
            for mode, r in ranks.items():
                missed = [q.id for q, rank in zip(questions, r, strict=True) if rank is None]
                print(f"  {mode} misses {len(missed)}: {' '.join(missed)}")
    print(f"\n{args.set}: {len(questions)} questions, top {args.k}\n")
    print(table(results))


if __name__ == "__main__":
    main()
