"""Grounded answers: quotes from the retrieved passages, chosen by the model, each cited; "the documents do not say"
when nothing scores well. Fast tests use a scripted model and the toy embedder; the property test the real ones."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core.chat import ScriptedModel
from rag import Collection, Retriever, answer, samples, stream_answer
from rag.answer import NOTHING_RELEVANT, Source, standalone_query
from rag.evaluate import load_questions
from rag.grounded import ALSO, CHOICES, NOT_SUPPORTED, candidates, grounded_answer, quoted_spans, split_passage

from conftest import ToyEmbedder

FILINGS = Path(__file__).parent / "data" / "filings"  # two earnings releases (SOURCE.md there)

STATEMENT = """CONSOLIDATED STATEMENTS OF OPERATIONS
(In millions, except per-share amounts)
Years ended September 24, 2022 and September 25, 2021
Net sales:
Products $ 316,199 $ 297,392 $ 220,747
Services 78,129 68,425 53,768
Total net sales 394,328 365,817 274,515
Total net sales increased 8% or $28.5 billion during 2022 compared to 2021, driven primarily by higher net
sales of iPhone, Services and Mac. The weakness in foreign currencies had an unfavorable impact.
Apple Inc. | 2022 Form 10-K | 24"""
RISKS = """The Company's business can be affected by a pandemic. Supply chain disruptions may reduce sales.
Apple Inc. | 2022 Form 10-K | 12"""
FIGURE = re.compile(r"\d[\d,.]*\d|\d")


def normal(text: str) -> str:
    return " ".join(text.split())


def sources() -> list[Source]:
    return [Source(1, "APPLE_2022_10K.pdf", 24, STATEMENT, 0.03, 0.6),
            Source(2, "APPLE_2022_10K.pdf", 12, RISKS, 0.02, 0.4)]


def test_a_passage_splits_into_table_rows_and_sentences():
    pieces = split_passage(STATEMENT)
    assert "Total net sales 394,328 365,817 274,515" in pieces  # a table row stays one piece
    assert "Products $ 316,199 $ 297,392 $ 220,747" in pieces
    # prose wrapped over lines is joined, then cut into sentences; a line naming two years is not a table row
    assert ("Total net sales increased 8% or $28.5 billion during 2022 compared to 2021, driven primarily by higher "
            "net sales of iPhone, Services and Mac.") in pieces
    assert "The weakness in foreign currencies had an unfavorable impact." in pieces
    long = "word " * 200 + "end."
    assert all(len(piece) <= 320 for piece in split_passage(long))
    assert normal(" ".join(split_passage(long))) == normal(long)  # cut, nothing lost


def test_running_footers_are_not_candidates():
    texts = [c.text for c in candidates(sources())]
    assert not any("Form 10-K" in text for text in texts)
    assert any(text.startswith("Total net sales 394,328") for text in texts)


def test_a_sentence_cut_differently_by_overlapping_chunks_is_one_candidate():
    page = ("Once sent, the proxy may close the connection. The Keep Window field of the goodbye message specifies a "
            "time in seconds the data should be held. 6.4. Create a validation request")
    overlapping = [Source(1, "srx.pdf", 30, page, 0.03, 0.6), Source(2, "srx.pdf", 30, page[47:], 0.02, 0.5)]
    found = [c for c in candidates(overlapping) if "Keep Window" in c.text]
    assert len(found) == 1
    assert found[0].quote == found[0].text  # "6.4." numbers the next heading: the quote does not go on into it
    intro = Source(1, "10k.pdf", 12, "Net sales by reportable segment were as follows:\nAmericas $ 169,658 $ 153,306",
                   0.03, 0.6)
    [listed] = [c for c in candidates([intro]) if c.text.endswith("follows:")]
    assert listed.quote == "Net sales by reportable segment were as follows: Americas $ 169,658 $ 153,306"


def test_the_model_chooses_and_the_answer_quotes_verbatim_with_citations():
    model = ScriptedModel(["2"])
    result = grounded_answer("What were Apple's total net sales in fiscal 2022?", found := sources(), model,
                             ToyEmbedder())
    call = model.calls[0]
    assert call.options["choices"] == [str(n) for n in range(1, CHOICES + 1)]
    listed = dict(re.findall(r"^(\d)\. (.+)$", call.prompt[-1]["content"], re.M))
    first = result.text.split("\n")[0]
    assert first == f"\u201c{listed['2']}\u201d [APPLE_2022_10K.pdf p. 24]"  # the model's choice comes first
    for quote in quoted_spans(result.text):
        assert any(normal(quote) in normal(s.text) and s.cited for s in found), quote
    assert result.finish_reason == "stop" and found[0].cited


def test_a_reply_outside_the_choices_takes_the_best_scored():
    result = grounded_answer("What were total net sales?", sources(), ScriptedModel(["none of them"]), ToyEmbedder())
    assert quoted_spans(result.text)[0].startswith("Total net sales")


def test_weak_evidence_says_the_documents_do_not_say():
    model = ScriptedModel([])  # the model is not asked
    result = grounded_answer("Who painted the Mona Lisa?", found := sources(), model, ToyEmbedder())
    assert result.text.startswith(NOT_SUPPORTED) and result.finish_reason == "weak_evidence"
    assert 1 <= len(quoted_spans(result.text)) <= 2 and any(s.cited for s in found) and not model.calls


def test_follow_ups_search_with_the_previous_questions_words():
    history = [{"role": "user", "content": "What were Apple's total net sales in fiscal 2022?"},
               {"role": "assistant", "content": "394,328 [APPLE_2022_10K.pdf p. 24]"}]
    assert standalone_query("And in 2021?", history) == "And in 2021? (Apple total net sales fiscal)"
    assert standalone_query("What about Netflix?", history) == "What about Netflix? (2022 total net sales fiscal)"
    assert standalone_query("What are its main risks?", history) == "What are its main risks? (Apple 2022)"
    question = "How many paid memberships did Netflix have at the end of 2022?"
    assert standalone_query(question, history) == question  # stands alone
    assert standalone_query("And in 2021?", []) == "And in 2021?"


def test_earlier_answers_are_not_evidence(tmp_path):
    with Collection.open("c", data_dir=tmp_path, embedder=ToyEmbedder()) as collection:
        from rag import TextItem

        collection.add_texts([TextItem("report", "Total net sales were 394,328 million dollars in fiscal 2022. "
                                                "Total net sales were 365,817 million dollars in fiscal 2021.")])
        retriever = Retriever(collection)
        history = [{"role": "user", "content": "What were the total net sales in fiscal 2022?"},
                   {"role": "assistant", "content": "They were 999,999 [deleted.pdf p. 3]."}]
        model = ScriptedModel(["1", "Fine [1]."])
        stream = stream_answer(retriever, model, "And in 2021?", history=history, min_similarity=0.0)
        text = "".join(stream)
        assert "999,999" not in text and "999,999" not in json.dumps(model.calls[0].prompt)
        assert "365,817" in text or "394,328" in text
        stream = stream_answer(retriever, model, "And in 2021?", history=history, min_similarity=0.0, style="free")
        "".join(stream)
        prompt = model.calls[-1].prompt[-1]["content"]
        assert "999,999" not in prompt and "Earlier question: What were the total net sales" in prompt


def check_grounded(answer, question_id: str) -> None:
    """Every quote and every figure of a grounded answer is on a page it cites; the only other text is fixed."""
    cited = [s for s in answer.sources if s.cited]
    quotes = quoted_spans(answer.text)
    assert cited and quotes, (question_id, answer.text)
    for quote in quotes:
        assert any(normal(quote) in normal(s.text) for s in cited), (question_id, quote)
    outside = answer.text
    for quote in quotes:
        outside = outside.replace(f"\u201c{quote}\u201d", "")
    outside = re.sub(r"\[[^\]]+\]", "", outside)  # the tags
    assert not FIGURE.search(outside), (question_id, outside)  # no figure of the model's own
    assert {line for line in outside.splitlines() if line.strip(" -")} <= {NOT_SUPPORTED, ALSO}


def test_demo_answers_quote_their_cited_pages(demo_data_dir, llm):
    """A property over many real answers: every quote and every figure of a grounded answer is on a page it cites."""
    with Collection.open("demo", data_dir=demo_data_dir) as collection:
        retriever = Retriever(collection)
        for record in load_questions(samples.QUESTIONS)[::3]:
            result = answer(retriever, llm, record.question)
            if result.finish_reason != "nothing_relevant":
                check_grounded(result, record.id)


def test_filings_answers_quote_their_cited_pages(tmp_path, embedder, llm):
    """The same property on two company filings (tables of figures) and their frozen questions."""
    files = sorted(FILINGS.glob("*.pdf"))
    questions = [q for q in load_questions(samples.FILINGS_QUESTIONS) if q.file in {f.name for f in files}]
    assert len(questions) >= 10
    with Collection.open("filings", data_dir=tmp_path, embedder=embedder) as collection:
        assert all(report.ok for report in collection.add_files(files))
        retriever = Retriever(collection)
        correct = 0
        for record in questions:
            result = answer(retriever, llm, record.question)
            if result.finish_reason != "nothing_relevant":
                check_grounded(result, record.id)
            correct += record.answer in result.text
    assert correct >= len(questions) // 2  # the figure asked for, verbatim


@pytest.mark.parametrize("question", ["What is a good recipe for chocolate cake?", "Who painted the Mona Lisa?"])
def test_questions_without_support_get_the_documents_do_not_say(demo_data_dir, llm, question):
    with Collection.open("demo", data_dir=demo_data_dir) as collection:
        result = answer(Retriever(collection), llm, question)
    assert result.text == NOTHING_RELEVANT or result.text.startswith(NOT_SUPPORTED)
