"""Answers: correctness, citations, support and time to first words, grounded style vs free style, fresh vs history.

The question sets are the frozen ones of rag.evaluate: the demo PDFs' (rag/samples/questions.jsonl) and the
company filings' (rag/samples/filings_questions.jsonl over ../shared/data/pdfs/filings), each question with
its answer pages and a gold string that a correct answer contains. Per style and condition:
- correct: the gold string is in the answer (case and spacing aside), over all questions and over those whose
  answer page was among the retrieved sources ("page found");
- cited: answers with at least one valid citation, among those that had sources ("nothing relevant" answers
  are counted apart);
- supported: answer sentences (a grounded answer's quotes) carrying a citation to a source that holds all
  their figures and at least half of their words (rag.words.terms);
- first words / full answer: median seconds from the question to the first delta and to the last,
  retrieval included, on the embedded SmolLM2.
"history": the same question asked after the previous question of the set and its answer, as in a chat.
The reference is the free style (what the app did before the grounded style), measured in the same run: the
ratio column is grounded over free. The free style writes up to 256 tokens per answer, so it runs on every
`--free-every`-th question only (both styles are compared on those questions in the ratio table).

Run: .venv/bin/python -m bench.answers [--set demo|filings|both] [--free-every 3] [--limit N]
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import results
from rag import evaluate, samples
from rag.answer import Answer, stream_answer
from rag.grounded import quoted_spans
from rag.retriever import Retriever
from rag.words import terms

K = 5
SETS = {"demo": samples.QUESTIONS, "filings": samples.FILINGS_QUESTIONS}
_FIGURE = re.compile(r"\d[\d,.]*\d|\d")
_TAG = re.compile(r"\[([^\[\]\n]+)\]")
_UNIT = re.compile(r"(?<=[.!?\u201d\]])\s+(?=[A-Z\u201c])|\n+")  # not inside "[file p. 3]"


@dataclass
class Outcome:
    question: str
    style: str
    history: bool
    correct: bool
    page_found: bool
    nothing_relevant: bool
    cited: bool
    units: int  # sentences (quotes) that could be checked
    supported: int
    first_s: float
    full_s: float


def ask(retriever: Retriever, llm, question: evaluate.Question, style: str, history: list[dict]) -> tuple[Answer,
                                                                                                          float, float]:
    started = time.perf_counter()
    first = None
    stream = stream_answer(retriever, llm, question.question, k=K, history=history, style=style)
    for _ in stream:
        first = first or time.perf_counter() - started
    return stream.answer, first or 0.0, time.perf_counter() - started


def outcome(question: evaluate.Question, style: str, history: bool, answer: Answer, first: float,
            full: float) -> Outcome:
    gold = " ".join(question.answer.split()).lower()
    text = " ".join(answer.text.split()).lower()
    found = any(s.file == question.file and s.page in question.pages for s in answer.sources)
    units, supported = support(answer)
    return Outcome(question.id, style, history, bool(gold) and gold in text, found, answer.finish_reason ==
                   "nothing_relevant", bool(answer.cited_sources), units, supported, first, full)


def support(answer: Answer) -> tuple[int, int]:
    """(sentences checked, sentences supported): a sentence with words of its own is supported when a source it
    cites holds all its figures and at least half its words. A grounded answer's sentences are its quotes, each
    with the tag after it; several retrieved chunks of one page share a tag."""
    by_tag: dict[str, list] = {}
    for source in answer.sources:
        by_tag.setdefault(source.tag, []).append(source)
    quotes = quoted_spans(answer.text)
    if quotes:
        pieces = [f"{q} {m.group(1)}" for q in quotes
                  if (m := re.search(re.escape(q) + "\u201d (\\[[^\\[\\]\n]+\\])", answer.text))]
    else:
        pieces = [p for p in _UNIT.split(answer.text) if p.strip()]
    checked = ok = 0
    for piece in pieces:
        cited = [source for tag in _TAG.findall(piece) for source in by_tag.get(f"[{tag}]", [])]
        body = _TAG.sub("", piece)
        words = set(terms(body))
        if len(words) < 2:
            continue
        checked += 1
        ok += any(all(f in source.text for f in _FIGURE.findall(body))
                  and len(words & set(terms(source.text))) >= 0.5 * len(words) for source in cited)
    return checked, ok


def run_set(name: str, pdfs: Path | None, llm, embedder, free_every: int, limit: int | None,
            data_dir: Path) -> list[Outcome]:
    questions = evaluate.load_questions(SETS[name])
    files = evaluate.set_files(name, pdfs, questions)
    questions = questions[:limit]
    started = time.perf_counter()
    with evaluate.keep_collection(data_dir, embedder, files, f"eval-{name}-{embedder.precision}") as collection:
        print(f"{name}: {len(files)} files, {len(collection)} chunks ingested in {time.perf_counter() - started:.0f} s")
        retriever = Retriever(collection)
        ask(retriever, llm, questions[0], "grounded", [])  # warm-up: the first call compiles and fills caches
        out, fresh = [], {}
        styles = {q.id: ["grounded", "free"] if n % free_every == 0 else ["grounded"] for n, q in enumerate(questions)}
        for question in questions:
            for style in styles[question.id]:
                answer, first, full = ask(retriever, llm, question, style, [])
                out.append(outcome(question, style, False, answer, first, full))
                if style == "grounded":
                    fresh[question.id] = answer.text
        # The same questions after the one before them and its answer, in a second pass: asked right after its
        # fresh run, a question would find its own prompt in the engine's prefix cache.
        for previous, question in zip(questions, questions[1:], strict=False):
            history = [{"role": "user", "content": previous.question},
                       {"role": "assistant", "content": fresh[previous.id]}]
            for style in styles[question.id]:
                answer, first, full = ask(retriever, llm, question, style, history)
                out.append(outcome(question, style, True, answer, first, full))
        for question in questions:
            print(f"  {question.id}: " + " ".join(f"{o.style[0]}{'h' if o.history else ''}={'ok' if o.correct else '-'}"
                                                  for o in out if o.question == question.id), flush=True)
    return out


def summary(rows: list[Outcome]) -> dict[str, float]:
    answered = [r for r in rows if not r.nothing_relevant]
    found = [r for r in rows if r.page_found]
    units = sum(r.units for r in rows)
    return {"questions": len(rows),
            "correct": _share(r.correct for r in rows),
            "correct (page found)": _share(r.correct for r in found),
            "page found": _share(r.page_found for r in rows),
            "cited": _share(r.cited for r in answered),
            "nothing relevant": _share(r.nothing_relevant for r in rows),
            "supported sentences": sum(r.supported for r in rows) / units if units else float("nan"),
            "first words s (median)": statistics.median(r.first_s for r in rows),
            "full answer s (median)": statistics.median(r.full_s for r in rows)}


def _share(flags) -> float:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else float("nan")


def tables(name: str, rows: list[Outcome]) -> tuple[str, dict]:
    data, lines = {}, [f"## {name}", ""]
    groups = {(style, history): [r for r in rows if r.style == style and r.history == history]
              for style in ("grounded", "free") for history in (False, True)}
    header = list(summary(rows))
    lines += ["| style | chat | " + " | ".join(header) + " |", "|---|---|" + "---|" * len(header)]
    for (style, history), group in groups.items():
        if group:
            values = summary(group)
            data[f"{style}/{'history' if history else 'fresh'}"] = values
            lines.append(f"| {style} | {'history' if history else 'fresh'} | "
                         + " | ".join(_fmt(values[h]) for h in header) + " |")
    shared = {r.question for r in rows if r.style == "free"}
    lines += ["", f"Same questions ({len(shared)}, the free style's), grounded / free:", "",
              "| chat | metric | grounded | free | ratio |", "|---|---|---|---|---|"]
    for history in (False, True):
        pair = [summary([r for r in rows if r.style == s and r.history == history and r.question in shared] or rows)
                for s in ("grounded", "free")]
        for metric in ("correct", "cited", "supported sentences", "first words s (median)", "full answer s (median)"):
            g, f = pair[0][metric], pair[1][metric]
            lines.append(f"| {'history' if history else 'fresh'} | {metric} | {_fmt(g)} | {_fmt(f)} | "
                         f"{g / f:.2f} |" if f else f"| {'history' if history else 'fresh'} | {metric} | {_fmt(g)} | "
                         f"{_fmt(f)} | - |")
    return "\n".join(lines), data


def _fmt(value: float) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = results.parser("answers", __doc__)
    parser.add_argument("--set", choices=["demo", "filings", "both"], default="both")
    parser.add_argument("--pdfs", type=Path, help=f"the filings' folder (default: {evaluate.FILINGS_DIR})")
    parser.add_argument("--keep", type=Path, help="keep the ingested collections in DIR and reuse them on later runs")
    parser.add_argument("--free-every", type=int, default=3, help="run the free style on every N-th question")
    parser.add_argument("--limit", type=int, help="only the first N questions of each set")
    args = parser.parse_args()
    from core import load
    from rag.embeddings import SentenceTransformerEmbedder

    llm, embedder = load(), SentenceTransformerEmbedder()
    body, data = [], {}
    for name in (["demo", "filings"] if args.set == "both" else [args.set]):
        with tempfile.TemporaryDirectory() as temporary:
            rows = run_set(name, args.pdfs, llm, embedder, args.free_every, args.limit, args.keep or Path(temporary))
        text, data[name] = tables(name, rows)
        body.append(text)
    results.write("answers", "Answers: grounded vs free style", "\n\n".join(body), data, args.results)


if __name__ == "__main__":
    main()
