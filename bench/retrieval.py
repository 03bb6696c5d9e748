"""Retrieval: page hit@1, hit@5, MRR and document hit@1 per method, with each improvement on and off.

Both question sets of rag.evaluate (demo: 66 questions over the sample PDFs; filings: 84 over 11 company
filings, all in one collection). Methods: dense, BM25, hybrid (rag.retriever). Improvements:
- context: each chunk indexed after its document's identity and its page's headings (rag.context); off
  means a second collection, ingested without (`Collection.set_contextual(False)`);
- one per page: the best chunk of each page stands for it (`Retriever.search(one_per_page=True)`); off, the
  top 5 may hold several overlapping chunks of one page.
The reference is each method with both off (the retriever before them), measured in the same run; the ratio
is hit@5 against it. The filings are not shipped: they are read from the shared data (rag.evaluate.FILINGS_DIR)
or --pdfs. Ingesting the filings takes minutes per collection: --keep DIR keeps them for later runs.

Run: .venv/bin/python -m bench.retrieval [--set demo|filings|both] [--keep DIR]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench import results
from rag import evaluate
from rag.retriever import Retriever

K = 5
SETS = {"demo": evaluate.samples.QUESTIONS, "filings": evaluate.samples.FILINGS_QUESTIONS}


def measure(retriever: Retriever, questions: list[evaluate.Question], mode: str, one_per_page: bool) -> dict:
    hits = [retriever.search(q.question, k=K, mode=mode, one_per_page=one_per_page) for q in questions]
    ranks = [evaluate.first_hit(found, q) for found, q in zip(hits, questions, strict=True)]
    return evaluate.metrics(ranks, K) | {"doc@1": evaluate.document_hit_at_1(hits, questions)}


def run_set(name: str, pdfs: Path | None, embedder, data_dir: Path) -> list[dict]:
    questions = evaluate.load_questions(SETS[name])
    files = evaluate.set_files(name, pdfs, questions)
    rows = []
    for contextual in (True, False):
        started = time.perf_counter()
        label = "context" if contextual else "plain"
        with evaluate.keep_collection(data_dir, embedder, files, f"retrieval-{name}-{label}",
                                      contextual) as collection:
            print(f"{name}, {label}: {len(collection)} chunks ready in {time.perf_counter() - started:.0f} s")
            retriever = Retriever(collection)
            for mode in evaluate.MODES:
                for one_per_page in (True, False):
                    rows.append({"mode": mode, "context": contextual, "one_per_page": one_per_page}
                                | measure(retriever, questions, mode, one_per_page))
    return rows


def table(name: str, rows: list[dict]) -> str:
    before = {row["mode"]: row[f"hit@{K}"] for row in rows if not row["context"] and not row["one_per_page"]}
    lines = [f"## {name}", "", f"| mode | context | one per page | hit@1 | hit@{K} | MRR | doc@1 | hit@{K} / before |",
             "|---|---|---|---|---|---|---|---|"]
    order = sorted(rows, key=lambda r: (evaluate.MODES.index(r["mode"]), not r["context"], not r["one_per_page"]))
    for row in order:
        ratio = row[f"hit@{K}"] / before[row["mode"]] if before[row["mode"]] else float("nan")
        on = {key: "on" if row[key] else "off" for key in ("context", "one_per_page")}
        lines.append(f"| {row['mode']} | {on['context']} | {on['one_per_page']} | {row['hit@1']:.3f} "
                     f"| {row[f'hit@{K}']:.3f} | {row['mrr']:.3f} | {row['doc@1']:.3f} "
                     f"| {ratio:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = results.parser("retrieval", __doc__)
    parser.add_argument("--set", choices=["demo", "filings", "both"], default="both")
    parser.add_argument("--pdfs", type=Path, help=f"the filings' folder (default: {evaluate.FILINGS_DIR})")
    parser.add_argument("--keep", type=Path, help="keep the ingested collections in DIR and reuse them on later runs")
    args = parser.parse_args()
    from rag.embeddings import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    body, data = [], {}
    for name in (["demo", "filings"] if args.set == "both" else [args.set]):
        with tempfile.TemporaryDirectory() as temporary:
            data[name] = run_set(name, args.pdfs, embedder, args.keep or Path(temporary))
        body.append(table(name, data[name]))
    note = (f"Top {K} of `Retriever.search`, embedder {embedder.precision}. \"before\": the same mode with context "
            "and one per page off.")
    results.write("retrieval", "Retrieval: pages found, per method and improvement", note + "\n\n" + "\n\n".join(body),
                  data, args.results)


if __name__ == "__main__":
    main()
