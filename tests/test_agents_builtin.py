"""Built-in tools: the calculator computes without eval and within bounds; date/time; tools over a RAG collection."""

import re
import time

import jsonschema
import pytest

from agents import (
    Agent,
    ScriptedModel,
    ToolArgumentError,
    ToolFailed,
    calculator,
    current_datetime,
    rag_tools,
    summarize_tool,
)
from agents.builtin import MAX_EXPONENT, MAX_ROUND_DIGITS, question_spans
from agents.tools import DEFAULT_TIMEOUT_S
from rag.collection import Collection


@pytest.mark.parametrize("expression, value", [
    ("17 * 23", "391"), ("(3 + 4) * 5", "35"), ("2 ** 10", "1024"), ("7 / 2", "3.5"), ("7 // 2", "3"),
    ("-7 % 3", "2"), ("sqrt(81)", "9"), ("round(pi, 3)", "3.142"), ("max(1, 5, 2) - min(4, 3)", "2"),
    ("factorial(5)", "120"), ("log(e)", "1"), ("  1.5e3 + 1 ", "1501"), ("+-2", "-2"),
    ("0.1 + 0.2", "0.30000000000000004"),
])
def test_calculator_computes(expression, value):
    assert calculator.run({"expression": expression}) == value


@pytest.mark.parametrize("expression, says", [
    ("__import__('os').system('echo hi')", "unsupported expression"),
    ("(1).__class__", "unsupported expression"),
    ("open('/etc/passwd')", "unsupported expression"),
    ("x + 1", "unsupported expression 'x'"),
    ("2 ** 10000", f"exponent 10000 is too large \\(the limit is {MAX_EXPONENT}\\)"),
    ("9 ** 9 ** 9", "exponent 387420489 is too large"),
    ("(10 ** 999) ** 999", "more than 4096 bits"),
    ("factorial(10 ** 6)", "factorial of 1000000 is too large"),
    ("round(1, -10 ** 7)", f"round to -10000000 digits is out of range \\(the limit is ±{MAX_ROUND_DIGITS}\\)"),
    ("round(1.5, 101)", "round to 101 digits is out of range"),
    ("1 < 2", "unsupported expression"),
    ("'a' * 3", "unsupported expression"),
    ("sqrt(x=4)", "unsupported expression"),
    ("1 +", "not an arithmetic expression"),
    ("1 / 0", "ZeroDivisionError"),
    ("(-1) ** 0.5", "complex number"),
    ("1" * 400, "the limit is 300"),
])
def test_calculator_refuses_what_is_not_bounded_arithmetic(expression, says):
    with pytest.raises(ToolFailed, match=says):
        calculator.run({"expression": expression})


def test_calculator_refuses_a_huge_round_at_once_and_is_bounded_in_time():
    started = time.monotonic()
    with pytest.raises(ToolFailed, match="out of range"):
        calculator.run({"expression": "round(1, -10 ** 7)"})  # computing it holds the interpreter for seconds
    assert time.monotonic() - started < 0.5
    assert calculator.run({"expression": f"round(123456, -{MAX_ROUND_DIGITS})"}) == "0"
    assert calculator.timeout == DEFAULT_TIMEOUT_S  # and whatever else runs long ends in a ToolTimeout


def test_current_datetime_is_now_in_the_zone():
    text = current_datetime.run({"timezone": "Europe/Paris"})
    assert re.fullmatch(r"\w+day \d{4}-\d\d-\d\d \d\d:\d\d:\d\d Europe/Paris \(UTC[+-]\d{4}\)", text)
    with pytest.raises(ToolFailed, match="unknown time zone 'Mars/Olympus'"):
        current_datetime.run({"timezone": "Mars/Olympus"})


PAGES = ["Welcome to the handbook. Read it all.",
         "Refunds: customers may return goods within 30 days for a full refund.",
         "Vacation: staff have 25 days of paid vacation each year. "
         + " ".join(f"Rule {n}: ask {n} weeks ahead." for n in range(60))]  # no repeats: chunk offsets are exact


@pytest.fixture(scope="module")
def collection(tmp_path_factory, toy_embedder):
    directory = tmp_path_factory.mktemp("rag")
    (directory / "handbook.txt").write_text("\f".join(PAGES))
    collection = Collection.open("docs", data_dir=directory / "data", embedder=toy_embedder)
    assert all(report.ok for report in collection.add_files([directory / "handbook.txt"]))
    yield collection
    collection.close()


def test_rag_tools_search_read_and_list(collection):
    search, read, listing = rag_tools(collection, k=2)
    assert [t.name for t in (search, read, listing)] == ["search_documents", "read_page", "list_documents"]
    assert search.parameters["properties"]["k"]["default"] == 2
    found = search.run({"query": "refund within 30 days"})
    assert found.startswith("[1] handbook.txt p. 2: Refunds: customers may return goods")
    assert read.run({"document": "handbook.txt", "page": 1}) == "handbook.txt, page 1:\n" + PAGES[0]
    doc_id = collection.documents()[0].doc_id
    assert read.run({"document": doc_id[:12], "page": 1}) == "handbook.txt, page 1:\n" + PAGES[0]  # or by id
    assert listing.run({}) == "handbook.txt (3 pages)"


def test_read_page_gives_a_page_split_into_several_chunks_whole(collection):
    store = collection.store
    doc = store.documents()[0]
    assert len([c for c in store.chunks_by_ids(store.chunk_ids(doc.doc_id)) if c.page == 3]) > 1
    text = rag_tools(collection)[1].run({"document": "handbook.txt", "page": 3})
    assert text.split() == ["handbook.txt,", "page", "3:", *PAGES[2].split()]


def test_read_page_errors_name_the_fix(collection):
    read = rag_tools(collection)[1]
    with pytest.raises(ToolFailed, match="no document 'guide.pdf'; the documents are: handbook.txt"):
        read.run({"document": "guide.pdf", "page": 1})
    with pytest.raises(ToolFailed, match="handbook.txt has pages 1 to 3, not 9"):
        read.run({"document": "handbook.txt", "page": 9})


def test_an_agent_uses_the_rag_tools(collection):
    outputs = [{"tool": "search_documents", "arguments": {"query": "vacation days"}},
               {"tool": "read_page", "arguments": {"document": "handbook.txt", "page": 3}},
               {"tool": "final_answer", "arguments": {"answer": "25 days"}}]
    result = Agent(ScriptedModel(outputs), rag_tools(collection)).run("How many vacation days?")
    assert result.answer == "25 days" and all(step.error is None for step in result.steps)
    assert "handbook.txt p. 3" in result.steps[0].observation
    assert "25 days of paid vacation" in result.steps[1].observation


class RecordingLock:
    """A lock that writes down when it is taken and released."""

    def __init__(self, events: list[str]):
        self.events = events

    def __enter__(self):
        self.events.append("lock")

    def __exit__(self, *exc):
        self.events.append("unlock")


class RecordingModel(ScriptedModel):
    def __init__(self, outputs, events: list[str]):
        super().__init__(outputs)
        self.events = events

    def generate(self, prompt, **options):
        self.events.append("generate")
        return super().generate(prompt, **options)


def test_summarize_tool_reads_the_first_pages_under_the_lock_and_writes_outside_it(collection):
    events = []
    model = RecordingModel(["A staff handbook."], events)
    summarize = summarize_tool(collection, model, RecordingLock(events), max_chars=60)
    assert summarize.run({"document": "handbook.txt"}) == "A staff handbook."
    assert events == ["lock", "unlock", "generate"]  # the collection is free while the model writes
    prompt = model.calls[0].prompt[0]["content"]
    first_pages = PAGES[0] + "\n" + PAGES[1]
    assert prompt == "Summarise this document in three sentences.\n\n" + first_pages[:60]  # 60 characters, no more
    with pytest.raises(ToolFailed, match="no document 'guide.pdf'; the documents are: handbook.txt"):
        summarize.run({"document": "guide.pdf"})


def test_rag_tools_use_the_collection_under_the_lock(collection):
    events = []
    search, read, listing = rag_tools(collection, lock=RecordingLock(events))
    search.run({"query": "refund"})
    read.run({"document": "handbook.txt", "page": 1})
    listing.run({})
    assert events == ["lock", "unlock"] * 3


def test_rag_tools_write_down_each_passage_they_show_once_as_a_source(collection):
    found = []
    search, read, _ = rag_tools(collection, k=2, found=found)
    search.run({"query": "refund within 30 days"})
    assert [(s.number, s.file, s.page) for s in found][:1] == [(1, "handbook.txt", 2)] and len(found) == 2
    assert found[0].text == PAGES[1] and found[0].doc_id == collection.documents()[0].doc_id
    assert found[0].score > 0 and 0 < found[0].similarity <= 1 and found[0].locator == "p. 2"
    search.run({"query": "refund within 30 days"})
    assert len(found) == 2  # the same passages again are not added again
    read.run({"document": "handbook.txt", "page": 3})
    page_3 = [s for s in found if s.page == 3]
    assert len(page_3) > 1 and all(s.text in PAGES[2] for s in page_3)  # the page's chunks
    assert {word for s in page_3 for word in s.text.split()} == set(PAGES[2].split())
    assert [s.number for s in found] == list(range(1, len(found) + 1))
    assert len({(s.doc_id, s.page, s.text) for s in found}) == len(found)
    read.run({"document": "handbook.txt", "page": 2})
    assert [s.page for s in found].count(2) == 1  # the search had shown this page's one chunk already
    with pytest.raises(ToolFailed):
        read.run({"document": "handbook.txt", "page": 9})
    assert [s.number for s in found] == list(range(1, len(found) + 1))


def test_question_spans_are_runs_of_its_words_without_stop_words_at_the_ends():
    spans = question_spans("Which file contains the Markov estimate method, in SP 800-90B?")
    assert spans[:4] == ["file", "file contains", "file contains the Markov", "file contains the Markov estimate"]
    assert {"Markov estimate", "Markov estimate method", "SP 800-90B", "method in SP 800-90B"} <= set(spans)
    assert not any(span.split()[0].lower() in {"which", "the", "in"} or span.split()[-1] in {"the", "in"}
                   for span in spans)
    assert all(len(span.split()) <= 5 for span in spans) and len(spans) == len(set(spans))
    assert question_spans("What is it?") == ["What is it"] and question_spans("?!") == []
    many = question_spans(" ".join(f"word{n}" for n in range(100)), limit=150)
    assert len(many) == 150 and all(f"word{n}" in many for n in range(100))  # the shortest are kept


def test_the_search_query_can_be_held_to_phrases_of_the_question(collection):
    spans = question_spans("How many days of paid vacation do staff have?")
    search = rag_tools(collection, query_spans=spans)[0]
    assert search.parameters["properties"]["query"]["enum"] == spans
    assert search.run({"query": "paid vacation"}).startswith("[1] handbook.txt p. 3: Vacation")
    with pytest.raises(ToolArgumentError, match="'2022' is not a phrase of the question"):
        search.run({"query": "2022"})
    schema = Agent(ScriptedModel([]), [search]).schema  # what constrained decoding lets the model write
    jsonschema.validate({"tool": "search_documents", "arguments": {"query": "paid vacation"}}, schema)
    for query in ("search_documents", "vacation days", ""):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"tool": "search_documents", "arguments": {"query": query}}, schema)
    with pytest.raises(ValueError, match="query_spans is empty"):
        rag_tools(collection, query_spans=[])


def test_an_agent_held_to_the_spans_is_told_what_it_may_search_for(collection):
    outputs = [{"tool": "search_documents", "arguments": {"query": "2022"}},
               {"tool": "search_documents", "arguments": {"query": "vacation"}},
               {"tool": "final_answer", "arguments": {"answer": "25"}}]
    found = []
    tools = rag_tools(collection, found=found, query_spans=question_spans("How much vacation?"), snippet_chars=20)
    result = Agent(ScriptedModel(outputs), tools).run("How much vacation?")
    assert result.steps[0].error.kind == "arguments" and "not a phrase of the question" in result.steps[0].observation
    assert result.steps[1].error is None and "Vacation: staff have..." in result.steps[1].observation  # 20 chars
    assert found and found[0].page == 3
