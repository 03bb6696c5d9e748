"""Routing: the tool chosen by the model's scores and the router's cosines, arguments held to spans of the task."""

import ast
import dataclasses
import json
import random
import re
from typing import Annotated, Literal

import pytest
import torch

from agents import Agent, ScriptedModel, read_trace, tool
from agents.routing import (
    Arithmetic,
    FreeText,
    FromInput,
    Routing,
    arithmetic_parameters,
    can_fill,
    expressions,
    from_input_parameters,
    lexical_scores,
    not_naming,
    numbers,
    of_kind,
    passage_parameters,
    passages,
    resolve,
    route,
    score_arguments,
    spans,
    spans_schema,
)
from agents.steps import step_schema
from agents.tools import ToolDefinitionError
from core import LLM
from core.errors import ContextLengthError

from conftest import save_tiny_checkpoint


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city.

    Args:
        city: the name of the city
    """
    return f"{city}: 18 degrees"


@tool
def convert(amount: float, currency: str) -> str:
    """Convert an amount of money into euros.

    Args:
        amount: how much money
        currency: the currency code of the amount
    """
    return f"{amount} {currency} is 3 EUR"


@tool
def write_note(text: str) -> str:
    """Write a note.

    Args:
        text: the text of the note
    """
    return "noted"


@tool
def reply(body: Annotated[str, FromInput], title: Annotated[str, FreeText]) -> str:
    """Reply to the user.

    Args:
        body: the body of the reply
        title: a title
    """
    return "sent"


TOOLS = [get_weather, convert, write_note]


class ScoringModel(ScriptedModel):
    """A ScriptedModel that also scores continuations: a tool's start by the log-probabilities given per tool name,
    a call with arguments by `arguments(continuation)` (0 for each by default)."""

    def __init__(self, logps: dict[str, float], outputs, arguments=lambda continuation: 0.0):
        super().__init__(outputs)
        self.logps, self.arguments, self.scored = logps, arguments, []

    def score(self, prompt, continuations):
        self.scored.append(continuations)
        return [self.arguments(c) if '"arguments"' in c else self.logps[json.loads(c + "}")["tool"]]
                for c in continuations]


def chosen_by_formula(logps, cosines, strength):
    return max(logps, key=lambda name: logps[name] + strength * cosines[name])


def test_the_router_order_is_what_the_scores_say(toy_embedder, tmp_path):
    logps = {"get_weather": -9.0, "convert": -3.0, "write_note": -4.0, "final_answer": -5.0}
    task = "weather in Oslo: the city weather now, 2 days"
    # The model alone prefers convert; the router (bag of words) prefers get_weather, whose text shares words.
    for weight, expected in ((0.0, "convert"), (1.0, "get_weather")):
        model = ScoringModel(logps, [{"tool": expected, "arguments": {"city": "Oslo"} if expected == "get_weather"
                                      else {"amount": 1, "currency": "Oslo"}}])
        settings = Routing(weight=weight, temperature=0.05, embedder=toy_embedder, answer_cosine=0.0, min_cosine=None,
                           scored_values=0)  # the call decoded: the scripted one
        agent = Agent(model, TOOLS, routing=settings, max_steps=1)
        step = agent.run(task, trace=tmp_path / f"{weight}.jsonl").steps[0]
        scores = step.routing["scores"]
        assert set(scores) == {*logps}
        assert step.routing["chosen"] == step.tool == expected
        cosines = {name: s["router"] or 0.0 for name, s in scores.items()}  # weight 0: the router is not asked
        assert expected == chosen_by_formula(logps, cosines, weight / 0.05)
        assert all(s["model"] == logps[name] for name, s in scores.items())
        # The call is decoded under the chosen tool's schema alone.
        branches = model.calls[0].options["json_schema"]["anyOf"]
        assert [b["properties"]["tool"]["const"] for b in branches] == [expected]
        recorded = read_trace(tmp_path / f"{weight}.jsonl").steps[0]
        assert recorded.routing == step.routing  # the trace shows why the tool was chosen
    assert cosines["get_weather"] > cosines["convert"] + 0.1


def test_top_k_restricts_the_candidates_and_a_model_without_score_picks_by_choices(toy_embedder):
    model = ScriptedModel(['{"tool": "get_weather"', {"tool": "get_weather", "arguments": {"city": "Oslo"}}])
    agent = Agent(model, TOOLS, routing=Routing(embedder=toy_embedder, top_k=1, min_cosine=None),
                  max_steps=1)
    step = agent.run("the weather in the city of Oslo").steps[0]
    assert model.calls[0].options["choices"] == ['{"tool": "get_weather"', '{"tool": "final_answer"']
    assert step.tool == "get_weather" and step.arguments == {"city": "Oslo"}
    assert set(step.routing["scores"]) == {"get_weather", "final_answer"}


def test_self_check_answers_when_the_best_tool_is_far_from_the_task(toy_embedder):
    logps = {"get_weather": -1.0, "convert": -9.0, "write_note": -9.0, "final_answer": -9.0}
    model = ScoringModel(logps, [{"tool": "final_answer", "arguments": {"answer": "hello"}}])
    settings = Routing(weight=0.0, embedder=toy_embedder, min_cosine=0.5)
    result = Agent(model, TOOLS, routing=settings).run("say hello")
    assert result.answer == "hello" and result.steps[0].routing["self_check"] is True
    assert model.calls[0].options["json_schema"] == step_schema([], 300)


def test_after_a_tool_result_the_answer_is_a_result_the_model_chooses(toy_embedder):
    logps = {"get_weather": -1.0, "convert": -9.0, "write_note": -9.0, "final_answer": -2.0}
    model = ScoringModel(logps, [{"tool": "get_weather", "arguments": {"city": "Oslo"}}])
    settings = Routing(weight=0.0, embedder=toy_embedder, min_cosine=None, scored_values=0)
    result = Agent(model, TOOLS, routing=settings).run("weather in Oslo")
    assert [s.tool for s in result.steps] == ["get_weather", "final_answer"]
    assert result.answer == "Oslo: 18 degrees" and len(model.calls) == 1  # chosen, not decoded
    assert "get_weather" not in result.steps[1].routing["scores"]  # called: no candidate now
    # Two results: the answer is the one the model scores best, whichever came last.
    logps = {"get_weather": -1.0, "convert": -9.0, "write_note": -1.5, "final_answer": -3.0}
    model = ScoringModel(logps, [{"tool": "get_weather", "arguments": {"city": "Oslo"}},
                                 {"tool": "write_note", "arguments": {"text": "umbrella"}}],
                         arguments=lambda continuation: -1.0 if "18 degrees" in continuation else -5.0)
    result = Agent(model, TOOLS, routing=settings).run("weather in Oslo")
    assert [s.tool for s in result.steps] == ["get_weather", "write_note", "final_answer"]
    assert result.answer == "Oslo: 18 degrees"
    assert result.steps[2].routing["arguments"]["answer"] == {'"noted"': -5.0, '"Oslo: 18 degrees"': -1.0}
    # Results too long to score after the prompt: the newest is the answer, the run goes on.
    def too_long(continuation):
        raise ContextLengthError("the prompt with the longest continuation passes the context")

    model = ScoringModel(logps, [{"tool": "get_weather", "arguments": {"city": "Oslo"}},
                                 {"tool": "write_note", "arguments": {"text": "umbrella"}}], arguments=too_long)
    assert Agent(model, TOOLS, routing=settings).run("weather in Oslo").answer == "noted"
    # After a result, another tool must be nearly as relevant to the task as the one called (follow_margin).
    from agents.routing import relevances, router_cosines

    task = [{"role": "user", "content": "weather in Oslo"}]
    logps = {"get_weather": -1.0, "convert": -9.0, "write_note": -1.0, "final_answer": -1.0}  # the prior decides
    relevance = relevances(router_cosines("weather in Oslo", TOOLS, settings), {}, settings)
    assert relevance["get_weather"] - relevance["write_note"] > 0.1  # the toy embedder's view of the task
    for margin, chosen in ((0.1, "final_answer"), (None, "write_note"), (2.0, "write_note")):
        routed = route(ScoringModel(logps, []), task, "weather in Oslo", [], TOOLS,
                       dataclasses.replace(settings, weight=1.0, lexical=0.0, answer_cosine=-1.0, follow_margin=margin),
                       300, called=frozenset({"get_weather"}), results=["Oslo: 18 degrees"])
        assert routed.tool == chosen, margin
    # Both off: a called tool is a candidate again, and the answer is left to the model to write.
    free = dataclasses.replace(settings, call_once=False, answer_with_results=False)
    task = [{"role": "user", "content": "weather in Oslo"}]
    for logps, chosen in (({"get_weather": -1.0, "convert": -9.0, "write_note": -9.0, "final_answer": -2.0},
                           "get_weather"),
                          ({"get_weather": -3.0, "convert": -9.0, "write_note": -9.0, "final_answer": -2.0},
                           "final_answer")):
        routed = route(ScoringModel(logps, []), task, "weather in Oslo", [], TOOLS, free, 300,
                       called=frozenset({"get_weather"}), results=["Oslo: 18 degrees"])
        assert routed.tool == chosen and "get_weather" in routed.record["scores"]
    assert routed.call is None and routed.schema == step_schema([], 300)  # the answer is decoded
    # Routing off: the agent as before, the model writes every step.
    model = ScriptedModel([{"tool": "get_weather", "arguments": {"city": "Oslo"}},
                           {"tool": "final_answer", "arguments": {"answer": "mild"}}])
    assert Agent(model, TOOLS, routing=None).run("weather in Oslo").answer == "mild"


def test_a_tool_without_from_input_arguments_is_decoded_as_before(toy_embedder):
    assert from_input_parameters(write_note, infer=True) == []
    assert from_input_parameters(reply, infer=True) == ["body"]  # the markers win over the inference
    assert from_input_parameters(get_weather, infer=False) == []
    task = [{"role": "user", "content": "make a note to buy milk"}]
    logps = {"get_weather": -9.0, "convert": -9.0, "write_note": -1.0, "final_answer": -9.0}
    routed = route(ScoringModel(logps, []), task, task[0]["content"], [], TOOLS,
                   Routing(weight=0.0, embedder=toy_embedder), 300)
    assert routed.schema == {"anyOf": step_schema([write_note], 300)["anyOf"][:1]}


def test_a_text_the_task_quotes_or_gives_after_a_colon_is_the_text_argument(toy_embedder):
    """A parameter named `text` takes a passage the task gives (quoted, or after its last colon) when it gives one;
    a marked FreeText one, or a task that gives none, stays free."""
    assert passages("How many words are in 'To be or not to be, that is the question'?") == [
        "To be or not to be, that is the question"]
    assert passages("cuont the wrods in: small models choose, they do not write facts") == [
        "small models choose, they do not write facts"]
    assert passages("Here it is: 'I build tools.' How many words is that?") == ["I build tools."]
    assert passages("what is the time at 6:30 in Rome?") == []  # no space after the colon: no passage
    assert passage_parameters(write_note, infer=True) == ["text"]
    assert passage_parameters(write_note, infer=False) == []

    @tool
    def jot(text: Annotated[str, FreeText]) -> str:
        """Jot something down.

        Args:
            text: what to jot
        """
        return "jotted"

    assert passage_parameters(jot, infer=True) == []
    logps = {"get_weather": -9.0, "convert": -9.0, "write_note": -1.0, "final_answer": -9.0}
    for prompt, values in (("note: buy milk", ["buy milk"]), ("note 'call Ann' please", ["call Ann"])):
        routed = route(ScoringModel(logps, []), [{"role": "user", "content": prompt}], prompt, [], TOOLS,
                       Routing(weight=0.0, embedder=toy_embedder, scored_values=0), 300)
        assert routed.schema["anyOf"][0]["properties"]["arguments"]["properties"]["text"]["enum"] == values


def test_arguments_may_come_from_a_tools_result(toy_embedder):
    @tool
    def search(topic: str) -> str:
        """Search the files about a topic.

        Args:
            topic: the topic
        """
        return "found in handbook.pdf on page 12"

    @tool
    def read_page(document: str, page: int) -> str:
        """Read a page of a document.

        Args:
            document: the file name
            page: the page number
        """
        return "text"

    logps = [{"search": -1.0, "read_page": -5.0, "final_answer": -9.0},
             {"search": -9.0, "read_page": -1.0, "final_answer": -9.0}]
    model = ScoringModel(logps[0], [{"tool": "search", "arguments": {"topic": "refunds"}},
                                    {"tool": "read_page", "arguments": {"document": "handbook.pdf", "page": 12}}])
    model.score = lambda prompt, continuations: [logps[len(model.calls)][json.loads(c + "}")["tool"]]
                                                 for c in continuations]
    settings = Routing(embedder=toy_embedder, min_cosine=None, answer_cosine=-1.0, scored_values=0)  # enums kept
    result = Agent(model, [search, read_page], routing=settings, max_steps=2).run("What do the files say on refunds?")
    assert [step.tool for step in result.steps] == ["search", "read_page"] and result.steps[1].error is None
    properties = model.calls[1].options["json_schema"]["anyOf"][0]["properties"]["arguments"]["properties"]
    assert "handbook.pdf" in properties["document"]["enum"] and "refunds" in properties["document"]["enum"]
    assert properties["page"]["enum"] == [12]


def test_spans_and_numbers_of_the_task():
    found = spans(["Email bob@example.com with the subject 'Report' now."], 3, 100)
    assert "bob@example.com" in found and "Report" in found and "subject 'Report" in found
    assert not any(span.lower().startswith(("the ", "with ")) for span in found)
    assert len(spans(["word " * 500], 5, 40)) <= 40
    assert of_kind(found, "to: the recipient's email address") == ["bob@example.com"]
    assert of_kind(found, "subject: the subject line") == found
    assert of_kind(["Report"], "to: an email address") == ["Report"]  # none of the kind: all the phrases
    assert numbers(["Convert 1,234 dollars and 2.5 euros, twice: 1,234"], integers=False) == [1234, 2.5]
    task = "Count the words in: 'The quick brown fox jumps over the lazy dog.' What's up? I'm \"here\""
    quoted = spans([task], 3, 100)
    assert quoted[:2] == ["The quick brown fox jumps over the lazy dog.", "here"]  # a quote whole, whatever its length
    assert not any(span.startswith("s up") for span in quoted)  # an apostrophe opens no quote


def test_phrases_that_only_name_the_tool_are_not_its_arguments():
    phrases = spans(["Search the internet for reviews of the Framework laptop"], 5, 300)
    kept = not_naming(search_internet, phrases)
    assert "Framework laptop" in kept and "internet" not in kept and "Search the internet" not in kept
    assert "internet for reviews" in kept  # says more than the tool's words
    assert not_naming(search_internet, ["internet", "search"]) == ["internet", "search"]  # nothing else: all kept
    assert numbers(["2.5 and 7"], integers=True) == [7]


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_checkpoint("llama", folder)
    return LLM.load(str(folder))


def test_score_is_the_summed_log_probability_of_each_continuation(tiny_llm):
    prompt = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog."}]
    ids = tiny_llm.prompt_ids(prompt)
    # Continuations of several tokens, and of one token each (nothing after the first to gather).
    for continuations in (['{"tool": "a"', "def main", "x"], ["x", "y"]):
        expected = []
        for text in continuations:
            tail = tiny_llm.tokenizer.encode(text, add_special_tokens=False, parse_special=False)
            with torch.no_grad():
                logits = tiny_llm.model(torch.tensor([ids + tail]), torch.arange(len(ids) + len(tail)))[0]
            logps = torch.log_softmax(logits, -1)
            expected.append(float(sum(logps[len(ids) + j - 1, token] for j, token in enumerate(tail))))
        assert tiny_llm.score(prompt, continuations) == pytest.approx(expected, abs=1e-3)
        assert tiny_llm.score(prompt, continuations) == pytest.approx(expected, abs=1e-3)  # its prefix cached now


def test_arguments_from_the_input_can_only_be_spans_of_the_task(tiny_llm, toy_embedder):
    rng = random.Random(0)
    words = ["Oslo", "the", "rain", "New", "York", "dollars", "euro", "in", "of", "Paris", "bank", "x-ray"]
    settings = Routing(weight=1000.0, temperature=0.01, answer_cosine=-1.0, embedder=toy_embedder, top_k=1)
    for _ in range(12):
        task = " ".join(rng.choice(words) if rng.random() < 0.8 else str(rng.randint(0, 999)) for _ in range(6))
        task = f"convert {task}"
        prompt = [{"role": "user", "content": task}]
        routed = route(tiny_llm, prompt, task, [], [convert], settings, 40)
        assert routed.tool == "convert"
        text = tiny_llm.generate(prompt, json_schema=routed.schema, max_new_tokens=150, temperature=1.0,
                                 seed=rng.randint(0, 10**6))
        arguments = json.loads(text)["arguments"]
        assert arguments["currency"] in spans([task], 5, 300) and arguments["currency"] in task
        if numbers([task], integers=False):
            assert arguments["amount"] in numbers([task], integers=False)


def test_routing_is_on_for_the_local_model_only_and_examples_are_shown(tiny_llm):
    assert resolve("auto", tiny_llm) == Routing() and resolve("auto", ScriptedModel([])) is None
    assert resolve(False, tiny_llm) is None and resolve(True, ScriptedModel([])) == Routing()
    with pytest.raises(ValueError):
        Agent(ScriptedModel([]), TOOLS, routing="sometimes")

    @tool(examples=[{"city": "Oslo"}])
    def weather(city: str) -> str:
        """The weather."""
        return city

    assert '"examples": [{"tool": "weather", "arguments": {"city": "Oslo"}}]' in Agent(tools=[weather]).system
    with pytest.raises(ToolDefinitionError, match="example"):
        tool(examples=[{"town": "Oslo"}])(weather.function)


@tool
def search_internet(query: str) -> str:
    """Search the internet and return the top pages.

    Args:
        query: the words to search for
    """
    return "pages"


@tool
def search_files(query: str) -> str:
    """Search the company's documents and return the passages that match.

    Args:
        query: the words to search for
    """
    return "passages"


@tool
def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: the arithmetic to do, with numbers, + - * / ** and parentheses
    """
    return "0"


def test_the_lexical_score_ranks_first_the_tool_whose_text_has_the_tasks_words():
    tools = [search_internet, search_files, get_weather, calculate]
    for task, expected in (("look it up on the internet: the next eclipse", "search_internet"),
                           ("check our internal docs for the expense policy", "search_files"),  # docs: documents
                           ("serch the internt for flights", "search_internet"),  # typos
                           ("whats the wheather in Oslo", "get_weather"),
                           ("23*19?", "calculate")):  # an operator between numbers is a word of calculate's
        scores = lexical_scores(task, tools)
        assert max(scores, key=scores.get) == expected and sorted(scores.values())[-2] < scores[expected], task
    scores = lexical_scores("search for the answer", tools)  # a word both search tools have counts less ...
    assert scores["search_internet"] == scores["search_files"] > 0
    rare = lexical_scores("the internet", tools)["search_internet"]
    assert rare > scores["search_internet"]  # ... than one only one tool has
    assert set(lexical_scores("hello there", tools).values()) == {0}
    assert lexical_scores("expense report", [calculate, get_weather]) == {"calculate": 0, "get_weather": 0}


def test_the_lexical_weight_can_overrule_the_cosine(toy_embedder):
    logps = {"search_internet": -5.0, "search_files": -5.0, "final_answer": -9.0}
    model = ScoringModel(logps, [{"tool": "search_internet", "arguments": {"query": "eclipse"}}])
    settings = Routing(embedder=toy_embedder, lexical=1.0, answer_cosine=-1.0, min_cosine=None)
    step = Agent(model, [search_files, search_internet], routing=settings, max_steps=1).run(
        "look up the eclipse on the internet").steps[0]
    scores = step.routing["scores"]
    assert step.routing["chosen"] == "search_internet"
    assert scores["search_internet"]["router"] > scores["search_files"]["router"] + 1.0


def test_arithmetic_arguments_are_expressions_over_the_numbers_of_the_task():
    assert arithmetic_parameters(calculate, infer=True) == ["expression"]
    assert arithmetic_parameters(calculate, infer=False) == []
    assert arithmetic_parameters(write_note, infer=True) == []

    @tool
    def compute(formula: Annotated[str, FreeText], sum_: Annotated[str, Arithmetic]) -> str:
        """Compute.

        Args:
            formula: a formula
            sum_: what to add
        """
        return "0"

    assert arithmetic_parameters(compute, infer=True) == ["sum_"]
    assert expressions(["Calculate (3 + 4) * 5."]) == ["(3 + 4) * 5"]  # written out: the user's expression
    # The operations the task names hold the offers to them (typos matched); none named: all.
    assert expressions(["What is 2 to the power of 10?"]) == ["2 ** 10", "10 ** 2"]
    assert expressions(["wat is 250 divded by 8"]) == ["250 / 8", "8 / 250"]
    assert expressions(["What is 15% of 80?"]) == ["80 * (15 / 100)"]
    assert len(expressions(["what is 3 and 4 together"])) == 10
    assert "144 / 12" in expressions(["Divide 144 by 12."]) and "sqrt(81)" in expressions(["The root of 81?"])
    assert "80 * (15 / 100)" in expressions(["What is 15% of 80?"])
    assert expressions(["Say hello."]) == []
    rng = random.Random(1)
    allowed = re.compile(r"sqrt\(|[-+*/%() ]|\*\*|\d+(\.\d+)?")  # % only as the task writes it
    for _ in range(200):
        words = [rng.choice(["what", "is", "of", "times", "%", "divided", "(", ")", "+", "x"]) if rng.random() < 0.6
                 else str(rng.choice([rng.randint(0, 999), round(rng.uniform(0, 99), 2)])) for _ in range(8)]
        task = " ".join(words)
        found = numbers([task], integers=False)
        for expression in expressions([task]):
            ast.parse(expression, mode="eval")
            assert re.fullmatch(f"(?:{allowed.pattern})+", expression), expression
            for number in re.findall(r"\d+(?:\.\d+)?", expression):
                assert float(number) in found or number == "100", (task, expression)  # 100: of a percentage


def test_a_tool_that_needs_a_number_of_the_task_is_no_candidate_without_one(toy_embedder):
    assert not can_fill(calculate, ["what can you do?"], Routing()) and can_fill(calculate, ["2 + 2?"], Routing())
    assert not can_fill(convert, ["convert dollars"], Routing()) and can_fill(convert, ["", "it costs 3"], Routing())
    assert can_fill(get_weather, ["hello"], Routing())  # a string: the task's phrases
    logps = {"get_weather": -9.0, "convert": -1.0, "write_note": -5.0, "final_answer": -9.0}
    model = ScoringModel(logps, [{"tool": "write_note", "arguments": {"text": "x"}}])
    step = Agent(model, TOOLS, routing=Routing(embedder=toy_embedder, min_cosine=None), max_steps=1).run(
        "convert my dollars").steps[0]
    assert "convert" not in step.routing["scores"] and step.tool == "write_note"


def test_an_enum_is_held_to_the_values_the_task_names():
    @tool
    def weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> str:
        """The weather.

        Args:
            city: the city
            unit: the unit
        """
        return city

    def unit_enum(task):
        return spans_schema(weather, [task], Routing())["properties"]["unit"]["enum"]

    assert unit_enum("weather in Oslo in Fahrenheit?") == ["fahrenheit"]
    assert unit_enum("weather in Oslo") == ["celsius", "fahrenheit"]  # named none: all
    assert unit_enum("celsius or fahrenheit in Oslo") == ["celsius", "fahrenheit"]
    assert unit_enum("weather in fahrenheitville") == ["celsius", "fahrenheit"]  # a whole word only


def test_short_enums_get_the_value_the_model_scores_best():
    @tool
    def weather(city: str, unit: Literal["celsius", "fahrenheit"], note: str) -> str:
        """The weather.

        Args:
            city: the city
            unit: the unit
            note: a note
        """
        return city

    def arguments(continuation):  # prefers Oslo (any unit), then fahrenheit after it
        return (-1.0 if '"city": "Oslo"' in continuation else -5.0) + (-1.0 if "fahrenheit" in continuation else -3.0)

    model = ScoringModel({}, [], arguments)
    parameters = spans_schema(weather, ["Oslo or Bergen weather"], Routing())
    scored, scores = score_arguments(model, [], dataclasses.replace(weather, parameters=parameters), 24)
    assert scored["properties"]["city"]["enum"] == ["Oslo"] and scored["properties"]["unit"]["enum"] == ["fahrenheit"]
    assert "enum" not in scored["properties"]["note"]  # free text: decoded
    assert scores["city"]['"Oslo"'] > scores["city"]['"Bergen"'] and set(scores) == {"city", "unit"}
    assert all(c.startswith('{"tool": "weather", "arguments": {"city": "Oslo", "unit": ') for c in model.scored[1])
    model.arguments = lambda continuation: -1.0 if continuation.count('"Oslo"') == 2 else -5.0
    twice, _ = score_arguments(model, [], dataclasses.replace(weather, parameters={
        **parameters, "properties": {**parameters["properties"], "note": parameters["properties"]["city"]}}), 24)
    assert twice["properties"]["note"]["enum"] != ["Oslo"]  # one string is not taken for two arguments
    few, _ = score_arguments(model, [], dataclasses.replace(weather, parameters=parameters), 1)
    assert few == parameters  # more values than the limit: nothing scored, the decoder chooses


def test_arguments_are_scored_together():
    @tool
    def exchange(source: str, target: str) -> str:
        """Exchange money.

        Args:
            source: the currency to sell
            target: the currency to buy
        """
        return "done"

    def arguments(continuation):  # source JPY is likelier alone, but source GBP then target JPY is likelier together
        source = json.loads(continuation.split('"source": ')[1].split(",")[0].removesuffix("}}"))
        target = continuation.split('"target": ')[1].removesuffix("}}") if '"target"' in continuation else None
        return {"JPY": -1.0, "GBP": -2.0}[source] + {None: 0.0, '"JPY"': -0.5, '"GBP"': -3.0}[target]

    parameters = {**exchange.parameters, "properties": {name: {**schema, "enum": ["GBP", "JPY"]}
                                                        for name, schema in exchange.parameters["properties"].items()}}
    tool_ = dataclasses.replace(exchange, parameters=parameters)
    alone, _ = score_arguments(ScoringModel({}, [], arguments), [], tool_, 24, beam=1)
    together, _ = score_arguments(ScoringModel({}, [], arguments), [], tool_, 24, beam=2)
    assert [alone["properties"][name]["enum"] for name in ("source", "target")] == [["JPY"], ["GBP"]]
    assert [together["properties"][name]["enum"] for name in ("source", "target")] == [["GBP"], ["JPY"]]


def test_a_call_whose_arguments_were_all_scored_is_not_decoded(toy_embedder):
    logps = {"get_weather": -1.0, "convert": -9.0, "write_note": -9.0, "final_answer": -9.0}
    model = ScoringModel(logps, [], lambda continuation: -1.0 if "Bergen" in continuation else -2.0)
    step = Agent(model, TOOLS, routing=Routing(embedder=toy_embedder, min_cosine=None), max_steps=1).run(
        "weather in Oslo or Bergen").steps[0]
    assert model.calls == [] and step.output == '{"tool": "get_weather", "arguments": {"city": "Bergen"}}'
    assert step.tool == "get_weather" and step.arguments == {"city": "Bergen"} and step.completion_tokens > 0
    assert step.routing["arguments"]["city"]['"Bergen"'] == -1.0


def test_scored_arguments_on_a_real_model_are_among_the_values(tiny_llm, toy_embedder):
    settings = Routing(weight=1000.0, temperature=0.01, answer_cosine=-1.0, embedder=toy_embedder, top_k=1)
    task = "convert 12 dollars in Oslo"
    prompt = [{"role": "user", "content": task}]
    routed = route(tiny_llm, prompt, task, [], [convert], settings, 40)
    properties = routed.schema["anyOf"][0]["properties"]["arguments"]["properties"]
    assert properties["amount"]["enum"] == [12] and len(properties["currency"]["enum"]) == 1
    offered = not_naming(convert, spans([task], 5, 300))
    assert properties["currency"]["enum"][0] in offered and "convert" not in offered
    assert set(routed.record["arguments"]["currency"]) == {json.dumps(v) for v in offered}
    arguments = json.loads(tiny_llm.generate(prompt, json_schema=routed.schema, max_new_tokens=200))["arguments"]
    assert arguments == {"amount": 12, "currency": properties["currency"]["enum"][0]}
