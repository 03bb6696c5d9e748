"""RAG: ingest throughput per embedder precision, retrieval latency and memory at 10k and 100k chunks, TTFT.

Ingest: the sample PDFs of rag.samples (9 + 34 pages) concatenated --copies times (3: 129 pages) into one PDF,
then the stages `Collection.add_files` runs, timed one by one: parse (PDFium; pypdf where it cannot), chunk
(splitter + the model's tokenizer + rag.context), embed (each chunk's indexed text), write (SQLite rows,
vectors into the index, index saved). float32 is the reference; each other precision is given as a speed-up
over it, measured in the same run. "BEFORE" is the default (int8) ingest as it was before PDFium and contextual
chunks: pypdf alone reads the PDF, chunks are embedded without their context; the ingest target is 2x its pages/s.

Retrieval: a collection of N synthetic chunks in a fresh process (so RSS is that size's own). Texts: the
real chunks of the demo PDFs, each synthetic one the first half of one real chunk's words and the second
half of another's, plus three rare tokens (a real word with a number, like part numbers), so BM25 indexes
real-looking text with a long tail. Vectors: the two parents' real embeddings averaged, plus Gaussian
noise (norm ~0.5), renormalised; clustered like real data, never duplicates. The queries are the
evaluation set's questions (rag/samples/questions.jsonl), embedded at query time as in use. Latency is
`Retriever.search(question, k=5, mode)` wall time, query embedding included, after one warm-up query per
mode (the first hybrid/bm25 query builds the BM25 index: reported as its own row).

The CLI: `llmkit search COLLECTION QUESTION --json` on the same collection, run from the shell as a user runs it
(a fresh process: imports, the embedder's load, the collection's open, one search), wall seconds: first without
a saved BM25 index (it is built and saved), then the median of CLI_RUNS runs that load it; set against the
in-process hybrid search's p50, the time a process that stays up takes.

Run: .venv/bin/python -m bench.rag  (--quick: one repeat, 10k chunks only, fewer queries).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import results

MODES = ("dense", "bm25", "hybrid")
REFERENCE = "float32"
TARGET_P95_MS = 50  # retrieval at 100k chunks
BEFORE = "int8, before"  # the ingest variant that reads with pypdf alone and embeds no context (module doc)
TARGET_INGEST_SPEEDUP = 2.0  # int8 pages/s against BEFORE
TARGET_EMBED_SPEEDUP = 3.0  # the fastest precision's embedding over float32's
TARGET_CLI_S = 2.0  # one `llmkit search --json` from the shell at 10k chunks
CLI_RUNS = 3
STAGES = ("parse", "chunk", "embed", "write")


# --- ingest ---------------------------------------------------------------------------------------------------------

def concatenated_pdf(directory: Path, copies: int) -> tuple[Path, int]:
    """The demo PDFs, `copies` times over, as one file: (path, pages)."""
    import pypdf

    from rag.samples import PDFS

    writer = pypdf.PdfWriter()
    for _ in range(copies):
        for path in PDFS:
            writer.append(str(path))
    path = directory / f"demo-x{copies}.pdf"
    with path.open("wb") as file:
        writer.write(file)
    return path, len(writer.pages)


@contextlib.contextmanager
def timed_stage(stage: str, times: dict):
    """Wall seconds of the block into times[stage], CPU seconds of the whole process (all threads) into
    times[stage + "_cpu"]."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    times[stage] = time.perf_counter() - wall
    times[f"{stage}_cpu"] = time.process_time() - cpu


def ingest_once(embedder, pdf: Path, directory: Path, before: bool = False) -> dict:
    """Seconds per stage for one PDF, the stages of Collection.add_files (rag.collection._ingest); `before`: as
    they were before PDFium and contextual chunks (BEFORE)."""
    from rag import loaders
    from rag.chunking import chunk_pages, make_splitter
    from rag.context import indexed_text
    from rag.index import make_index
    from rag.store import MetadataStore

    times = {}
    with timed_stage("parse", times), contextlib.ExitStack() as stack:
        if before:  # the loaders' own fallback when PDFium cannot open a file: pypdf alone
            pdfium_open = loaders._Pdfium.open
            loaders._Pdfium.open = lambda data, password: None
            stack.callback(setattr, loaders._Pdfium, "open", pdfium_open)
        pages, report = loaders.load_file(pdf)
    assert report.ok, report.error
    with timed_stage("chunk", times):
        chunks = chunk_pages(pages, report.content_hash, report.name, make_splitter(embedder.count_tokens),
                             contextual=not before)
    with timed_stage("embed", times):
        vectors = embedder.embed([indexed_text(c.context, c.text) for c in chunks])  # as the collection does
    with timed_stage("write", times):
        store = MetadataStore(directory / "store.sqlite")
        ids = store.add_document(report, chunks)
        index = make_index(embedder.dim)
        index.add(np.array(ids, np.int64), vectors)
        index.save(directory / "index")
        store.close()
    return {**times, "total": sum(times[stage] for stage in STAGES), "pages": len(pages), "chunks": len(chunks)}


def measure_ingest(precisions: list[str], copies: int, repeats: int) -> dict:
    """{precision: median stage seconds, pages/s, chunks/s, parse+chunk share}; precisions interleaved per repeat."""
    from rag.embeddings import SentenceTransformerEmbedder

    embedders = {p: SentenceTransformerEmbedder(precision=p) for p in precisions}
    if "int8" in embedders:
        embedders[BEFORE] = embedders["int8"]
    runs = {p: [] for p in embedders}
    with tempfile.TemporaryDirectory() as tmp:
        pdf, _ = concatenated_pdf(Path(tmp), copies)
        for embedder in embedders.values():
            embedder.embed(["warm-up"])
        for repeat in range(repeats):
            for precision, embedder in embedders.items():
                directory = Path(tmp) / f"{precision.replace(', ', '-')}-{repeat}"
                directory.mkdir()
                runs[precision].append(ingest_once(embedder, pdf, directory, before=precision == BEFORE))
                print(f"ingest {precision} #{repeat + 1}: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in runs[precision][-1].items()), file=sys.stderr)
    results = {}
    for precision, rs in runs.items():
        keys = [*STAGES, "total", *(f"{stage}_cpu" for stage in STAGES)]
        med = {key: statistics.median(r[key] for r in rs) for key in keys}
        pages, chunks = rs[0]["pages"], rs[0]["chunks"]
        cpu_total = sum(med[f"{stage}_cpu"] for stage in STAGES)
        results[precision] = {**med, "pages": pages, "chunks": chunks, "pages_per_s": pages / med["total"],
                              "chunks_per_s": chunks / med["total"], "embed_chunks_per_s": chunks / med["embed"],
                              "parse_chunk_share": (med["parse"] + med["chunk"]) / med["total"],
                              "parse_chunk_cpu_share": (med["parse_cpu"] + med["chunk_cpu"]) / cpu_total}
    return results


# --- retrieval ------------------------------------------------------------------------------------------------------

def rss_mb() -> float:
    """Resident memory now (Linux /proc), else the peak so far."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_collection(directory: Path, embedder, size: int, seed: int = 0):
    """A Collection of `size` synthetic chunks (see the module doc), in 100 documents."""
    from rag.chunking import Chunk, chunk_pages, make_splitter
    from rag.collection import Collection
    from rag.index import make_index
    from rag.loaders import LoadReport, load_file
    from rag.samples import PDFS
    from rag.store import MetadataStore

    splitter = make_splitter(embedder.count_tokens)
    base = []
    for path in PDFS:
        pages, report = load_file(path)
        base += [c.text for c in chunk_pages(pages, report.content_hash, report.name, splitter)]
    base_vectors = embedder.embed(base)  # (n, dim)
    words = [text.split() for text in base]
    vocabulary = sorted({w for ws in words for w in ws if w.isalpha() and len(w) > 3})
    rng = np.random.default_rng(seed)
    parents = rng.integers(len(base), size=(size, 2))
    rare = rng.integers(len(vocabulary), size=(size, 3))
    numbers = rng.integers(10_000, size=(size, 3))
    texts = [" ".join(words[a][: len(words[a]) // 2] + words[b][len(words[b]) // 2:]
                      + [f"{vocabulary[r]}{n}" for r, n in zip(rare[i], numbers[i], strict=True)])
             for i, (a, b) in enumerate(parents)]
    noise = rng.standard_normal((size, embedder.dim), dtype=np.float32) * (0.5 / embedder.dim ** 0.5)
    vectors = base_vectors[parents[:, 0]] + base_vectors[parents[:, 1]] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    directory.mkdir(parents=True, exist_ok=True)
    store = MetadataStore(directory / "store.sqlite")
    documents = []
    for d, part in enumerate(np.array_split(np.arange(size), 100)):
        report = LoadReport(path=f"synthetic-{d}.pdf", name=f"synthetic-{d}.pdf", kind="pdf",
                            pages_total=len(part) // 4 + 1, pages_with_text=len(part) // 4 + 1,
                            content_hash=f"{d:064x}")
        documents.append((report, [Chunk(report.content_hash, report.name, int(i) // 4 % report.pages_total + 1, 0,
                                         len(texts[i]), texts[i]) for i in part]))
    ids = np.array([i for doc_ids in store.add_documents(documents) for i in doc_ids], np.int64)
    index = make_index(embedder.dim)
    start = time.perf_counter()
    index.add(ids, vectors)
    index_build = time.perf_counter() - start
    return Collection("bench", directory, embedder, store, index), index_build, ids, vectors


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(seconds, q)) * 1000


def measure_retrieval(size: int, precision: str, queries: int, ttft: bool) -> dict:
    """Build a `size`-chunk collection and time every mode; also RSS and where hybrid's time goes."""
    from rag.embeddings import SentenceTransformerEmbedder
    from rag.evaluate import load_questions
    from rag.retriever import Retriever

    embedder = SentenceTransformerEmbedder(precision=precision)
    embedder.embed(["warm-up"])
    result = {"rss_before_mb": rss_mb()}
    questions = [q.question for q in load_questions()]
    questions = [questions[i % len(questions)] for i in range(queries)]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        collection, result["index_build_s"], ids, vectors = synthetic_collection(
            Path(tmp) / "collections" / "bench", embedder, size)  # where `llmkit --data-dir tmp` finds it
        result["recall_at_10"] = index_recall(collection.index, ids, vectors, embedder.embed(questions))
        result["build_s"] = time.perf_counter() - start
        retriever = Retriever(collection)
        start = time.perf_counter()
        retriever.search(questions[0], k=5, mode="bm25")  # builds the BM25 index
        result["bm25_build_s"] = time.perf_counter() - start
        for mode in MODES:
            retriever.search(questions[0], k=5, mode=mode)
            seconds = []
            for question in questions:
                start = time.perf_counter()
                retriever.search(question, k=5, mode=mode)
                seconds.append(time.perf_counter() - start)
            result[mode] = {"p50_ms": percentile_ms(seconds, 50), "p95_ms": percentile_ms(seconds, 95)}
        seconds = []
        for question in questions:  # one document of the 100: the filter path
            start = time.perf_counter()
            retriever.search(question, k=5, documents=["synthetic-0.pdf"])
            seconds.append(time.perf_counter() - start)
        result["hybrid_filtered"] = {"p50_ms": percentile_ms(seconds, 50), "p95_ms": percentile_ms(seconds, 95)}
        result["hybrid_parts_ms"] = hybrid_parts(retriever, questions)
        result["rss_mb"] = rss_mb()
        result["approximate_index"] = bool(getattr(collection.index, "approximate", False))
        result["ttft_s"] = time_to_first_token(retriever, questions[:3]) if ttft else None
        collection.index.save(collection.index_dir)  # as an add leaves it, for the CLI to open
        collection.close()
        result["cli_s"] = cli_search_seconds(Path(tmp), questions[0], precision)
    return result


def cli_search_seconds(data_dir: Path, question: str, precision: str) -> dict:
    """Wall seconds of `llmkit search bench QUESTION --json` in a fresh process: the first without a saved BM25
    index, then the median of CLI_RUNS with it."""
    from core import settings
    from rag.retriever import BM25_FILE

    (data_dir / "collections" / "bench" / BM25_FILE).unlink(missing_ok=True)
    command = [str(Path(sys.executable).parent / "llmkit"), "search", "bench", question, "--json",
               "--data-dir", str(data_dir)]
    env = {**os.environ, settings.EMBEDDING_PRECISION: precision}
    seconds = []
    for _ in range(CLI_RUNS + 1):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env, cwd=results.ROOT)
        seconds.append(time.perf_counter() - start)
    return {"first": seconds[0], "saved_median": statistics.median(seconds[1:])}


def index_recall(index, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    """Recall@k of the collection's index against exact inner-product search over the same vectors."""
    exact = ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :k]]  # (q, k)
    found = index.search(queries, k)[1]
    return float(np.mean([len(set(e) & set(f)) / k for e, f in zip(exact, found, strict=True)]))


def hybrid_parts(retriever, questions: list[str]) -> dict:
    """Median ms of each step a hybrid search takes, timed one by one: where the latency goes."""
    from rag.retriever import rrf

    collection, k = retriever.collection, retriever.candidates
    store, index = collection.store, collection.index
    steps = {name: [] for name in ("embed query", "vector search", "BM25 freshness check", "BM25 search",
                                   "RRF", "SQLite fetch")}

    def timed(name, fn):
        start = time.perf_counter()
        value = fn()
        steps[name].append(time.perf_counter() - start)
        return value

    for question in questions:
        vector = timed("embed query", lambda q=question: collection.embedder.embed([q]))
        _, dense = timed("vector search", lambda v=vector: index.search(v, k))
        timed("BM25 freshness check", retriever._corpus)
        scores = timed("BM25 search", lambda q=question: retriever._lexical(q, k, None))
        lexical = sorted(scores, key=lambda i: -scores[i])
        fused = timed("RRF", lambda d=dense, x=lexical: rrf([d[0].tolist(), x]))
        best = sorted(fused, key=lambda i: -fused[i])[:5]
        timed("SQLite fetch", lambda b=best: store.chunks_by_ids(b))
    return {name: statistics.median(values) * 1000 for name, values in steps.items()}


# --- time to first answer token -------------------------------------------------------------------------------------

def time_to_first_token(retriever, questions: list[str]) -> float | None:
    """Median seconds from a question to the first answer delta of `rag.answer.stream_answer`, retrieval included,
    with the embedded SmolLM2 (core.LLM.load()); None when rag.answer is not there."""
    try:
        from rag.answer import stream_answer
    except ImportError:
        return None
    from core.llm import LLM

    llm = LLM.load()
    seconds = []
    for question in questions:
        start = time.perf_counter()
        stream = stream_answer(retriever, llm, question)
        next(iter(stream))
        seconds.append(time.perf_counter() - start)
        stream.cancel()
    return statistics.median(seconds)


# --- report ---------------------------------------------------------------------------------------------------------

def markdown(ingest: dict, retrieval: dict, setup: str) -> str:
    precisions = list(ingest)
    ref = ingest.get(REFERENCE)
    first = ingest[precisions[0]]
    lines = [setup, "", f"## Ingest: one {first['pages']}-page PDF ({first['chunks']} chunks)", "",
             "| | " + " | ".join(precisions) + " |", "|---" * (len(precisions) + 1) + "|"]
    rows = [("parse s", "parse", ".2f"), ("chunk s", "chunk", ".2f"), ("embed s", "embed", ".2f"),
            ("write s", "write", ".2f"), ("total s", "total", ".2f"), ("pages/s", "pages_per_s", ".1f"),
            ("chunks/s (ingest)", "chunks_per_s", ".1f"), ("chunks/s (embed only)", "embed_chunks_per_s", ".1f"),
            ("parse + chunk share of total", "parse_chunk_share", ".1%"),
            ("parse + chunk share of CPU time (all threads)", "parse_chunk_cpu_share", ".1%")]
    for label, key, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(format(ingest[p][key], fmt) for p in precisions) + " |")
    if ref:
        lines.append(f"| embed speed-up vs {REFERENCE} | " + " | ".join(
            f"{ref['embed'] / ingest[p]['embed']:.2f}x" for p in precisions) + " |")
        lines.append(f"| ingest speed-up vs {REFERENCE} | " + " | ".join(
            f"{ref['total'] / ingest[p]['total']:.2f}x" for p in precisions) + " |")
    if BEFORE in ingest and "int8" in ingest:
        speedup = ingest["int8"]["pages_per_s"] / ingest[BEFORE]["pages_per_s"]
        lines += ["", f"Target: int8 ingest at least {TARGET_INGEST_SPEEDUP:.0f}x the pages/s of \"{BEFORE}\": "
                  f"{'met' if speedup >= TARGET_INGEST_SPEEDUP else 'MISSED'} ({speedup:.2f}x; the parse alone "
                  f"{ingest[BEFORE]['parse'] / ingest['int8']['parse']:.1f}x faster, embedding now "
                  f"{ingest['int8']['embed'] / ingest['int8']['total']:.0%} of the total)."]
    if ref:
        best, fastest = max((ref["embed"] / ingest[p]["embed"], p) for p in precisions)
        lines.append(f"Target: embedding at least {TARGET_EMBED_SPEEDUP:.0f}x faster than {REFERENCE}: "
                     f"{'met' if best >= TARGET_EMBED_SPEEDUP else 'MISSED'} ({fastest} {best:.2f}x).")
    if retrieval:
        sizes = list(retrieval)
        precision = next(iter(retrieval.values()))["precision"]
        lines += ["", f"## Retrieval: `Retriever.search(question, k=5)`, embedder {precision}", "",
                  "| | " + " | ".join(f"{int(s):,} chunks" for s in sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
        for mode in MODES:
            for q in ("p50", "p95"):
                lines.append(f"| {mode} {q} ms | " + " | ".join(f"{retrieval[s][mode][f'{q}_ms']:.1f}" for s in sizes)
                             + " |")
        for q in ("p50", "p95"):
            lines.append(f"| hybrid, filtered to 1 of 100 documents, {q} ms | " + " | ".join(
                f"{retrieval[s]['hybrid_filtered'][f'{q}_ms']:.1f}" for s in sizes) + " |")
        for part in next(iter(retrieval.values()))["hybrid_parts_ms"]:
            lines.append(f"| hybrid step: {part}, median ms | " + " | ".join(
                f"{retrieval[s]['hybrid_parts_ms'][part]:.2f}" for s in sizes) + " |")
        extra = [("vector index", lambda r: "HNSW (approximate)" if r["approximate_index"] else "flat (exact)"),
                 ("vector index build s", lambda r: f"{r['index_build_s']:.1f}"),
                 ("vector index recall@10 vs exact search", lambda r: f"{r['recall_at_10']:.3f}"),
                 ("BM25 index build (first query) s", lambda r: f"{r['bm25_build_s']:.1f}"),
                 ("RSS MB (after build and queries)", lambda r: f"{r['rss_mb']:.0f}"),
                 ("RSS MB growth over the loaded embedder", lambda r: f"{r['rss_mb'] - r['rss_before_mb']:.0f}"),
                 ("time to first answer token s (SmolLM2)",
                  lambda r: "n/a" if r["ttft_s"] is None else f"{r['ttft_s']:.2f}")]
        for label, cell in extra:
            lines.append(f"| {label} | " + " | ".join(cell(retrieval[s]) for s in sizes) + " |")
        lines += ["", f"## One `llmkit search QUESTION --json` from the shell (wall s, a fresh process), embedder "
                  f"{precision}", "", "| | " + " | ".join(f"{int(s):,} chunks" for s in sizes) + " |",
                  "|---" * (len(sizes) + 1) + "|"]
        def cli(r: dict, key: str) -> float:
            return r["cli_s"][key]

        for label, cell in (
                ("first run: BM25 index built and saved", lambda r: f"{cli(r, 'first'):.2f}"),
                (f"later runs, BM25 index loaded (median of {CLI_RUNS})", lambda r: f"{cli(r, 'saved_median'):.2f}"),
                ("in-process hybrid search p50 (a process that stays up)",
                 lambda r: f"{r['hybrid']['p50_ms'] / 1000:.3f}"),
                ("speed-up of the saved BM25 index over building it",
                 lambda r: f"{cli(r, 'first') / cli(r, 'saved_median'):.2f}x"),
                ("process start-up share of a CLI search",
                 lambda r: f"{1 - r['hybrid']['p50_ms'] / 1000 / cli(r, 'saved_median'):.0%}")):
            lines.append(f"| {label} | " + " | ".join(cell(retrieval[s]) for s in sizes) + " |")
        if "10000" in retrieval:
            seconds = cli(retrieval["10000"], "saved_median")
            lines += ["", f"Target: one CLI search under {TARGET_CLI_S:g} s at 10,000 chunks: "
                      f"{'met' if seconds < TARGET_CLI_S else 'MISSED'} ({seconds:.2f} s)."]
        largest = retrieval[sizes[-1]]
        worst = max(largest[m]["p95_ms"] for m in MODES)
        lines += ["", f"Target: retrieval p95 under {TARGET_P95_MS} ms at {int(sizes[-1]):,} chunks: "
                  f"{'met' if worst < TARGET_P95_MS else 'MISSED'} (worst mode {worst:.1f} ms)."]
    return "\n".join(lines)


def main() -> None:
    parser = results.parser("rag", __doc__)
    parser.add_argument("--precisions", default="float32,int8", help="embedder precisions to ingest with")
    parser.add_argument("--precision", default="int8", help="embedder precision for the retrieval part")
    parser.add_argument("--copies", type=int, default=3, help="copies of the demo PDFs in the ingest PDF")
    parser.add_argument("--repeats", type=int, default=3, help="ingest runs per precision (median)")
    parser.add_argument("--sizes", default="10000,100000", help="chunk counts for retrieval latency and memory")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per mode and size")
    parser.add_argument("--no-ttft", action="store_true", help="skip time to first answer token")
    parser.add_argument("--quick", action="store_true", help="1 repeat, 10k chunks, 50 queries")
    parser.add_argument("--retrieval-size", type=int, help=argparse.SUPPRESS)  # internal: one size in this process
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.sizes, args.queries = 1, "10000", 50
    if args.retrieval_size:
        result = measure_retrieval(args.retrieval_size, args.precision, args.queries, not args.no_ttft)
        print(json.dumps({**result, "precision": args.precision}))
        return
    ingest = measure_ingest(args.precisions.split(","), args.copies, args.repeats)
    retrieval = {}
    for size in args.sizes.split(","):
        command = [sys.executable, "-m", "bench.rag", "--retrieval-size", size, "--precision", args.precision,
                   "--queries", str(args.queries)] + (["--no-ttft"] if args.no_ttft else [])
        out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, cwd=results.ROOT)
        retrieval[size] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"retrieval {size}: {retrieval[size]}", file=sys.stderr)
    setup = f"Torch threads default; ingest: median of {args.repeats}."
    results.write("rag", "RAG: ingest, retrieval latency, memory", markdown(ingest, retrieval, setup),
                  {"ingest": ingest, "retrieval": retrieval}, args.results)


if __name__ == "__main__":
    main()
