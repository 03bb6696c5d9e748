"""Cited answers over the committed PDFs and over text items: the real SmolLM2, the real embedder, citations
checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core import ContextLengthError
from rag import Collection, Retriever, TextItem, answer, stream_answer
from rag.answer import NOTHING_RELEVANT, SYSTEM_PROMPT, Source, check_citations, fit_prompt

from conftest import ToyEmbedder, scripted_llm

GUIDE = "nist-sp800-90b-entropy-suite-user-guide.pdf"
SRX = "nist-srx-proxy-protocol-3.0.pdf"
CITATION_TAG = re.compile(r"(\[([^\[\]]+) p\. (\d+)\])")


@pytest.fixture(scope="module")
def retriever(demo_data_dir):
    with Collection.open("demo", data_dir=demo_data_dir) as collection:
        yield Retriever(collection)


def sources():
    return [Source(1, GUIDE, 3, "markov.py contains the Markov estimate", 0.03, 0.5),
            Source(2, SRX, 20, "the port", 0.02, 0.4)]


def test_check_citations_keeps_retrieved_pages_and_drops_invented_ones():
    text = (f"Markov is in markov.py [{GUIDE} p. 3]. Ports [2]. Made up [{GUIDE} p. 8]. "
            f"No extension [nist-srx-proxy-protocol-3.0 p. 20]. Out of range [7].")
    checked, invalid = check_citations(text, found := sources())
    assert invalid == [f"[{GUIDE} p. 8]", "[7]"]
    assert checked == (f"Markov is in markov.py [{GUIDE} p. 3]. Ports [{SRX} p. 20]. Made up. "
                       f"No extension [{SRX} p. 20]. Out of range.")
    assert [s.cited for s in found] == [True, True]


def test_check_citations_takes_generic_tags_and_keeps_other_brackets():
    found = [Source(1, "Re: outage", 1, "rack 4", 0.03, 0.5, locator="<outage-17@example.org>"),
             Source(2, "app.py", 1, "def f():", 0.02, 0.4, locator="L12-30"), *sources()[:1]]
    found[2].number = 3
    text = ("Rack 4 [Re: outage <outage-17@example.org>]. In f [app L12-30], [APP.PY  l12-30] and [2]. "
            "Wrong lines [app.py L1-5]. Elsewhere [other.py L3]. Wrong message [Re: outage <x@y>]. "
            f"A page of a text [app.py p. 1]. Markov [{GUIDE} page 3]. Untouched: [sic], a[i], [123], [see here].")
    checked, invalid = check_citations(text, found)
    assert invalid == ["[app.py L1-5]", "[other.py L3]", "[Re: outage <x@y>]", "[app.py p. 1]"]
    assert checked == ("Rack 4 [Re: outage <outage-17@example.org>]. In f [app.py L12-30], [app.py L12-30] and "
                       "[app.py L12-30]. Wrong lines. Elsewhere. Wrong message. A page of a text. "
                       f"Markov [{GUIDE} p. 3]. Untouched: [sic], a[i], [123], [see here].")
    assert all(s.cited for s in found)
    assert [s.tag for s in found] == ["[Re: outage <outage-17@example.org>]", "[app.py L12-30]", f"[{GUIDE} p. 3]"]
    assert found[1].to_json()["locator"] == "L12-30" and found[2].to_json()["locator"] == "p. 3"


def test_uncited_answer_marks_no_source():
    checked, invalid = check_citations("Nothing cited here.", found := sources())
    assert (checked, invalid) == ("Nothing cited here.", [])
    assert not any(s.cited for s in found)


def test_invented_citation_is_removed_from_a_streamed_answer(retriever):
    reply = f"The Markov estimate is in markov.py [{GUIDE} p. 3]. See also [{GUIDE} p. 9] and [1]."
    model = scripted_llm(reply)
    stream = stream_answer(retriever, model, "Which file contains the Markov estimate method?", style="free")
    assert "".join(stream) == reply  # deltas are what the model wrote, as it wrote them
    result = stream.answer
    assert result.sources[0].file == GUIDE and result.sources[0].page == 3
    assert result.invalid_citations == [f"[{GUIDE} p. 9]"]
    assert result.text == f"The Markov estimate is in markov.py [{GUIDE} p. 3]. See also and [{GUIDE} p. 3]."
    prompt = model.calls[0].prompt
    assert prompt[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert f"Source 1 [{GUIDE} p. 3]:" in prompt[-1]["content"]


def test_real_model_answers_citing_only_retrieved_chunks(retriever, llm):
    stream = stream_answer(retriever, llm, "What port does the SRx server listen on?", k=3, max_new_tokens=48,
                           style="free")
    written = "".join(stream)  # what the model wrote, citations and all
    result = stream.answer
    assert result.finish_reason in ("stop", "length") and result.text
    retrieved = {(s.file, s.page) for s in result.sources}
    assert retrieved and all(s.file == SRX for s in result.sources)
    assert all(s.similarity >= 0.3 for s in result.sources)
    # Every tag the model wrote is either a retrieved page, kept, or reported and removed; nothing else survives.
    for tag, file, page in CITATION_TAG.findall(written):
        assert ((file, int(page)) in retrieved) != (tag in result.invalid_citations), tag
    kept = {(file, int(page)) for _, file, page in CITATION_TAG.findall(result.text)}
    assert kept <= retrieved
    assert {(s.file, s.page) for s in result.cited_sources} == kept


@pytest.mark.parametrize("question", ["What is a good recipe for chocolate cake?",
                                      "Who won the 2018 football world cup?"])
def test_nothing_relevant_says_so_without_calling_the_model(retriever, question):
    result = answer(retriever, None, question)  # a model call would fail: None has no `stream`
    assert result.text == NOTHING_RELEVANT
    assert result.sources == [] and result.finish_reason == "nothing_relevant"


def test_system_prompt_is_reused_from_the_prefix_cache(retriever, llm):
    cache = llm.engine.prefix_cache
    answer(retriever, llm, "How do I run the non-IID tests?", k=2, max_new_tokens=4, style="free")
    reused = cache.tokens_reused
    answer(retriever, llm, "What is the Markov estimate?", k=2, max_new_tokens=4, style="free")
    system_tokens = len(llm.prompt_ids([{"role": "system", "content": SYSTEM_PROMPT}]))
    assert cache.tokens_reused - reused >= system_tokens - 2  # all but the tokens that open the user turn


def test_prompt_that_does_not_fit_drops_earlier_questions_then_sources():
    model = scripted_llm("")
    found = sources() * 3
    model.context_length = 600
    messages = fit_prompt(model, found, "q?", ["x " * 250, "y " * 250], answer_tokens=100)
    assert "Earlier question: x" not in messages[-1]["content"] and "Earlier question: y" in messages[-1]["content"]
    assert messages[-1]["content"].count("Source ") == 6  # the oldest question went first, no source
    assert model.count_tokens(messages) <= 500
    messages = fit_prompt(model, found, "q?", ["x " * 500], answer_tokens=100)
    assert "Earlier question" not in messages[-1]["content"] and model.count_tokens(messages) <= 500
    model.context_length = 120
    with pytest.raises(ContextLengthError, match="need more than the model's"):
        fit_prompt(model, [Source(1, GUIDE, 3, "z " * 400, 0.1, 0.5)], "q?", [], answer_tokens=100)


@pytest.mark.parametrize("question, message", [("   ", "empty"), ("x" * 5000, "limit is 4000")])
def test_bad_questions_are_refused(retriever, question, message):
    with pytest.raises(ValueError, match=message):
        stream_answer(retriever, None, question)


def test_sources_of_text_items_are_cited_by_their_locator_or_lines(tmp_path, embedder):
    outage = TextItem("Re: server outage", "The database server in rack 4 failed at 02:00 after its power supply "
                      "burnt out.", {"from": "ops@example.org"}, "<outage-17@example.org>")
    code = TextItem("rag/chunking.py", (Path(__file__).parents[1] / "rag" / "chunking.py").read_text())
    with Collection.open("texts", data_dir=tmp_path, embedder=embedder) as collection:
        assert all(report.ok for report in collection.add_texts([outage, code]))
        retriever = Retriever(collection)
        result = answer(retriever, scripted_llm("In rack 4 [1]."), "Which rack did the database server fail in?",
                        style="free")
        assert result.sources[0].tag == "[Re: server outage <outage-17@example.org>]"
        assert result.text == "In rack 4 [Re: server outage <outage-17@example.org>]."
        assert collection.find(result.sources[0].doc_id).metadata == {"from": "ops@example.org"}
        model = scripted_llm("See [1].")
        result = answer(retriever, model, "How does chunk_pages compute a chunk's line range with bisect_right?",
                        style="free")
        source = result.sources[0]
        first, last = map(int, re.fullmatch(r"L(\d+)-(\d+)", source.locator).groups())
        assert source.file == code.name and source.text in "\n".join(code.text.splitlines()[first - 1: last])
        assert source.tag == f"[rag/chunking.py L{first}-{last}]" and result.text == f"See {source.tag}."
        assert f"Source 1 {source.tag}:" in model.calls[0].prompt[-1]["content"]


class RecordingEmbedder(ToyEmbedder):
    """Keeps every text it embeds."""

    def __init__(self):
        super().__init__()
        self.texts: list[str] = []

    def embed(self, texts, progress=None):
        self.texts += texts
        return super().embed(texts, progress)


@pytest.mark.parametrize("mode", ["hybrid", "bm25"])
@pytest.mark.parametrize("style", ["grounded", "free"])
def test_an_answer_embeds_the_question_once(tmp_path, mode, style):
    """The retriever's query vector serves the search, the relevance check and the grounded scoring."""
    embedder = RecordingEmbedder()
    with Collection.open("once", data_dir=tmp_path, embedder=embedder) as collection:
        text = "The database server in rack 4 failed at 02:00 after its power supply burnt out. It moved to rack 5."
        assert collection.add_texts([TextItem("outage.txt", text)])[0].ok
        embedder.texts.clear()
        question = "Which rack did the database server fail in?"
        result = answer(Retriever(collection), scripted_llm("1"), question, mode=mode, style=style)
    assert result.sources and result.finish_reason != "nothing_relevant"
    assert embedder.texts.count(question) == 1
