"""Every benchmark imports as `bench.NAME` and writes its report through the one writer: a tiny made-up result per
benchmark goes through its table code into NAME.md and NAME.json. Nothing here measures anything."""

import json
import platform
import sys

import pytest

import bench.accuracy
import bench.agents
import bench.generate
import bench.load
import bench.rag
import bench.ring
from agents.evaluate import TASKS, Outcome
from agents.steps import Step
from agents.tasks import EXTENDED_TASKS
from bench import results


def test_the_writer_heads_both_files_with_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench/load.py", "--repeats", "1", "--note", "two words"])
    text = results.write("load", "Cold start", "| a |\n|---|\n| 1 |\n", {"seconds": {"a": 1.0}}, tmp_path)
    assert capsys.readouterr().out.strip() == text.strip()
    assert (tmp_path / "load.md").read_text() == text
    lines = text.splitlines()
    assert lines[0] == "# Cold start" and lines[-1] == "| 1 |"
    assert f"{platform.machine()}, " in lines[2]
    assert lines[2].endswith("Command: `.venv/bin/python -m bench.load --repeats 1 --note 'two words'`")
    saved = json.loads((tmp_path / "load.json").read_text())
    assert saved["seconds"] == {"a": 1.0}
    assert saved["run"]["command"] == ".venv/bin/python -m bench.load --repeats 1 --note 'two words'"
    assert {"date", "machine", "cores", "python", "torch"} <= saved["run"].keys()


@pytest.mark.parametrize("module", [bench.accuracy, bench.agents, bench.generate, bench.load, bench.rag, bench.ring])
def test_every_benchmark_is_a_module_that_takes_the_results_folder(module, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["x", "--help"])
    with pytest.raises(SystemExit) as exit:
        module.main()
    usage = capsys.readouterr().out
    assert exit.value.code == 0 and f"usage: python -m {module.__name__} " in usage and "--results RESULTS" in usage


def write(module, title, body, data, tmp_path) -> str:
    name = module.__name__.removeprefix("bench.")
    text = results.write(name, title, body, data, tmp_path)
    json.loads((tmp_path / f"{name}.json").read_text())  # every figure serialises
    return text


def test_accuracy_table(tmp_path):
    split = {"step": 20, "float32": [11, 0.153], "other": [17, 0.141]}
    figures = {"int4": {"top1": 0.988, "mean_kl": 0.00148, "max_abs_logit_diff": 2.336, "positions": 240,
                        "divergences": [None, split, None]}}
    text = write(bench.accuracy, "Accuracy", bench.accuracy.table(figures), {"figures": figures}, tmp_path)
    assert "| int4 | 98.8% of 240 | 0.00148 | 2.336 | 2/3 | 20: 0.15 / 0.14 |" in text


def test_ring_table(tmp_path):
    rows = [{"model": "tiny", "tokens": 16384, "procs": 4, "ring": True, "seconds": 37.16, "peak_mb": 510.2,
             "growth_mb": 269.4, "max_abs_logit_diff": 4.11e-06, "same_top1": True}]
    text = write(bench.ring, "Ring", bench.ring.table(rows), {"rows": rows}, tmp_path)
    assert "| tiny | 16,384 | ring, 4 processes | 37.16 | 510 | 269 | 4.11e-06 | yes |" in text


def test_agents_tables(tmp_path):
    task = TASKS[0]
    assert task.prompt == "What is 17 times 23?"
    right = Step(1, "call", tool="calculator", arguments={"expression": "17 * 23"})
    outcomes = [Outcome(task, [right], "final", 2.0), Outcome(task, [Step(1, "x|y", tool="nope")], "final", 1.0)]
    styled = [Outcome(EXTENDED_TASKS[0], [Step(1, "call", tool="search_web", arguments={"query": "Framework"})],
                      "final", 4.0)]
    runs = {"original": outcomes, "extended": styled}
    text = write(bench.agents, "Agents", bench.agents.markdown(runs, "setup"), bench.agents.data(runs), tmp_path)
    assert "| all | 2 | 100% | 50% | 50% | 1.00 | 1.5 |" in text  # the original set's, labelled by no style
    assert "| all sets | 3 | 100% | 67% | 67% | 1.00 | 2.3 |" in text
    assert "| imperative | 1 | 100% | 100% | 100% | 1.00 | 4.0 |" in text
    assert "`x\\|y`" in text
    saved = json.loads((tmp_path / "agents.json").read_text())
    assert saved["tasks"][0]["right_arguments"] is True and saved["tasks"][2]["set"] == "extended"


def test_generate_tables(tmp_path):
    figures = {side: {key: 2.0 for _, key, _ in bench.generate.ROWS} for side in ("ours", "transformers")}
    figures["ours"]["decode_tok_s_batch1"] = 4.0
    text = write(bench.generate, "Generation", bench.generate.tables(figures), {"results": figures}, tmp_path)
    assert "| decode tok/s, batch 1 | 4.00 | 2.00 |" in text
    assert "| decode tok/s, batch 1 | 2.00x |" in text  # ours vs transformers


def test_load_table(tmp_path):
    figures = {"llmkit": {"import": 1.0, "load": 0.5}, "transformers": {"import": 2.0, "load": 4.0}}
    text = write(bench.load, "Cold start", bench.load.table(figures), {"seconds": figures}, tmp_path)
    assert "| llmkit | 1.00 | 0.50 | 1.50 | 0.250x |" in text


def test_rag_tables(tmp_path):
    stages = {key: 1.0 for key in (*bench.rag.STAGES, *(f"{s}_cpu" for s in bench.rag.STAGES))}
    ingest = {p: {**stages, "total": 4.0, "pages": 129, "chunks": 600, "pages_per_s": 32.2, "chunks_per_s": 150.0,
                  "embed_chunks_per_s": 600.0, "parse_chunk_share": 0.5, "parse_chunk_cpu_share": 0.5}
              for p in ("float32", "int8")}
    ingest["int8"]["embed"] = 0.25
    parts = {"embed query": 3.0}
    size = {**{m: {"p50_ms": 5.0, "p95_ms": 9.0} for m in (*bench.rag.MODES, "hybrid_filtered")},
            "hybrid_parts_ms": parts, "approximate_index": False, "index_build_s": 0.1, "recall_at_10": 1.0,
            "bm25_build_s": 2.0, "rss_mb": 900.0, "rss_before_mb": 500.0, "ttft_s": None, "precision": "int8",
            "cli_s": {"first": 3.0, "saved_median": 1.5}}
    text = write(bench.rag, "RAG", bench.rag.markdown(ingest, {"10000": size}, "setup"),
                 {"ingest": ingest, "retrieval": {"10000": size}}, tmp_path)
    assert "| embed speed-up vs float32 | 1.00x | 4.00x |" in text
    assert "Target: embedding at least 3x faster than float32: met (int8 4.00x)." in text
    assert "| hybrid p95 ms | 9.0 |" in text and "| time to first answer token s (SmolLM2) | n/a |" in text
    assert "| later runs, BM25 index loaded (median of 3) | 1.50 |" in text
    assert "| speed-up of the saved BM25 index over building it | 2.00x |" in text
    assert "Target: one CLI search under 2 s at 10,000 chunks: met (1.50 s)." in text
