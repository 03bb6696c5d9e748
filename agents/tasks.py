"""The agent benchmark's frozen task sets and the stand-in tools they call (for agents.evaluate, bench/agents.py).

Two sets, each with its own tools, so that a figure on one means what it meant when it was written:
- `original` (`TASKS` over `TOOLS`): the first 32 tasks and 4 tools, unchanged since the first benchmark.
- `extended` (`EXTENDED_TASKS` over `EXTENDED_TOOLS`): 54 tasks written before any tuning of tool choice,
  over 12 tools whose names and descriptions overlap (web and document search; currency and unit
  conversion; three tools that take a city or a time), with tasks that need no tool and tasks phrased
  as users write (terse, lowercase, with typos, long-winded, with irrelevant context).
tests/test_agents_tasks.py holds their sha256: changing a task, its expectation or a tool's description
is a new benchmark, not a fix to this one.

A task's `spans` names the expected arguments whose values are spans of the task's text (case aside; a
number as it is written there), the ones a router may take from the input; `style` says how it is phrased.

The tools run offline and never send anything: searches return canned text, conversions use fixed rates
and factors (not today's), `send_email` asks for approval (the run pauses after the call, which is what is
scored). Their docstrings name no example values, which a small model copies into its calls.

Does not: hold tasks that need several tools in a row, or expected final answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agents.builtin import calculator
from agents.tools import FINAL_ANSWER, Tool, tool

Style = Literal["", "imperative", "question", "polite", "terse", "lowercase", "typos", "context"]


@dataclass(frozen=True)
class Task:
    prompt: str
    tool: str
    arguments: dict = field(default_factory=dict)  # the expected values of some arguments
    spans: tuple[str, ...] = ()  # the arguments whose expected values are spans of the prompt
    style: Style = ""  # how the prompt is phrased ("" in the original set, which was not labelled)


@dataclass(frozen=True)
class TaskSet:
    name: str
    tools: list[Tool]
    tasks: list[Task]


@tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> str:
    """Get the current weather in a city.

    Args:
        city: the name of the city
        unit: the temperature unit
    """
    return f"{city}: 18 degrees {unit}, light rain"


@tool
def search_documents(query: str) -> str:
    """Search the company's documents and return the passages that match.

    Args:
        query: the words to search for
    """
    return f"[1] handbook.pdf, page 3: ... {query} ..."


@tool(side_effects=True, requires_approval=True)
def send_email(to: str, subject: str, body: str) -> str:
    """Send an email.

    Args:
        to: the recipient's email address
        subject: the subject line
        body: the text of the email
    """
    return f"sent to {to}"


@tool
def search_web(query: str) -> str:
    """Search the internet and return the titles and snippets of the top pages.

    Args:
        query: the words to search for
    """
    return f"[1] {query} - Encyclopedia: ... {query} ...\n[2] {query}: news and reviews ..."


_PER_USD = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 150.0, "CHF": 0.88, "CAD": 1.36, "AUD": 1.52,
            "CNY": 7.2, "INR": 83.0, "SEK": 10.5}  # fixed stand-in rates, not today's


@tool
def convert_currency(amount: float, from_currency: str, to_currency: str) -> str:
    """Convert an amount of money from one currency to another at the current exchange rate.

    Args:
        amount: the amount of money to convert
        from_currency: the three-letter ISO 4217 code of the currency the amount is in
        to_currency: the three-letter ISO 4217 code of the currency to convert into
    """
    codes = from_currency.strip().upper(), to_currency.strip().upper()
    for code in codes:
        if code not in _PER_USD:
            raise ValueError(f"unknown currency code {code!r}; known: {', '.join(_PER_USD)}")
    return f"{amount:g} {codes[0]} = {amount / _PER_USD[codes[0]] * _PER_USD[codes[1]]:.2f} {codes[1]}"


# unit: (quantity, scale, offset), value in the quantity's base unit = value * scale + offset
_UNITS = {"meter": ("length", 1.0, 0.0), "kilometer": ("length", 1000.0, 0.0), "centimeter": ("length", 0.01, 0.0),
          "mile": ("length", 1609.344, 0.0), "foot": ("length", 0.3048, 0.0), "inch": ("length", 0.0254, 0.0),
          "kilogram": ("mass", 1.0, 0.0), "gram": ("mass", 0.001, 0.0), "pound": ("mass", 0.45359237, 0.0),
          "ounce": ("mass", 0.028349523125, 0.0), "liter": ("volume", 1.0, 0.0), "gallon": ("volume", 3.785411784, 0.0),
          "celsius": ("temperature", 1.0, 273.15), "fahrenheit": ("temperature", 5 / 9, 273.15 - 32 * 5 / 9),
          "kelvin": ("temperature", 1.0, 0.0)}
_UNIT_NAMES = {"m": "meter", "metre": "meter", "km": "kilometer", "kilometre": "kilometer", "cm": "centimeter",
               "centimetre": "centimeter", "mi": "mile", "ft": "foot", "feet": "foot", "in": "inch", "inche": "inch",
               "kg": "kilogram", "g": "gram", "lb": "pound", "oz": "ounce", "l": "liter", "litre": "liter",
               "gal": "gallon", "c": "celsius", "f": "fahrenheit", "k": "kelvin"}


def _unit(name: str) -> str:
    word = name.strip().lower().removeprefix("degrees ").removeprefix("°")
    word = word if word in _UNITS or word in _UNIT_NAMES else word.removesuffix("s")
    word = _UNIT_NAMES.get(word, word)
    if word not in _UNITS:
        raise ValueError(f"unknown unit {name!r}; known: {', '.join(_UNITS)}")
    return word


@tool
def convert_units(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a measurement from one unit to another: length, mass, volume or temperature.

    Args:
        value: the measurement to convert
        from_unit: the unit the measurement is in
        to_unit: the unit to convert into
    """
    (quantity, scale, offset), (target, to_scale, to_offset) = _UNITS[_unit(from_unit)], _UNITS[_unit(to_unit)]
    if quantity != target:
        raise ValueError(f"cannot convert {quantity} ({from_unit}) into {target} ({to_unit})")
    return f"{value:g} {from_unit} = {(value * scale + offset - to_offset) / to_scale:.4g} {to_unit}"


@tool
def get_stock_price(ticker: str) -> str:
    """Get the latest trading price of a company's shares.

    Args:
        ticker: the stock ticker symbol of the company
    """
    return f"{ticker.strip().upper()}: 187.20 USD at the last close"


@tool
def count_words(text: str) -> int:
    """Count the words in a text.

    Args:
        text: the text whose words to count
    """
    return len(text.split())


@tool
def translate(text: str, target_language: str) -> str:
    """Translate a text into another language.

    Args:
        text: the text to translate
        target_language: the name of the language to translate into
    """
    return f"({target_language}) {text}"


@tool(side_effects=True)
def set_reminder(text: str, time: str) -> str:
    """Set a reminder that notifies the user at a given time.

    Args:
        text: what to remind the user of
        time: when to remind the user, as a date and/or time of day
    """
    return f"reminder set for {time}: {text}"


@tool
def get_local_time(city: str) -> str:
    """Get the current local date and time in a city.

    Args:
        city: the name of the city
    """
    return f"{city}: 14:05, Tuesday"


TOOLS = [calculator, get_weather, search_documents, send_email]
EXTENDED_TOOLS = [calculator, get_weather, search_documents, send_email, search_web, convert_currency,
                  convert_units, get_stock_price, count_words, translate, set_reminder, get_local_time]

TASKS = [
    Task("What is 17 times 23?", "calculator", {"expression": 391}),
    Task("Compute 1234 + 5678.", "calculator", {"expression": 6912}),
    Task("What is 15% of 80?", "calculator", {"expression": 12}),
    Task("Divide 144 by 12.", "calculator", {"expression": 12}),
    Task("What is 2 to the power of 10?", "calculator", {"expression": 1024}),
    Task("What is the square root of 81?", "calculator", {"expression": 9}),
    Task("Calculate (3 + 4) * 5.", "calculator", {"expression": 35}),
    Task("How much is 100 minus 37?", "calculator", {"expression": 63}),
    Task("What's the weather in Paris?", "get_weather", {"city": "Paris"}),
    Task("Is it raining in London right now?", "get_weather", {"city": "London"}),
    Task("Tell me the temperature in Tokyo in fahrenheit.", "get_weather", {"city": "Tokyo", "unit": "fahrenheit"}),
    Task("How cold is it in Oslo today?", "get_weather", {"city": "Oslo"}),
    Task("Weather forecast for Berlin, please.", "get_weather", {"city": "Berlin"}),
    Task("Do I need an umbrella in Seattle today?", "get_weather", {"city": "Seattle"}),
    Task("What is the temperature in Madrid in celsius?", "get_weather", {"city": "Madrid", "unit": "celsius"}),
    Task("How hot is it in Cairo?", "get_weather", {"city": "Cairo"}),
    Task("Find what our documents say about the refund policy.", "search_documents", {"query": "refund"}),
    Task("Search the documents for the installation guide.", "search_documents", {"query": "installation"}),
    Task("What does the user guide say about entropy estimation?", "search_documents", {"query": "entropy"}),
    Task("Look up the warranty terms in our documents.", "search_documents", {"query": "warranty"}),
    Task("Search our files for the password reset procedure.", "search_documents", {"query": "password"}),
    Task("Find the section on data retention in the documents.", "search_documents", {"query": "retention"}),
    Task("What do the company documents say about vacation days?", "search_documents", {"query": "vacation"}),
    Task("Send an email to alice@example.com saying the meeting is at 3pm.", "send_email",
         {"to": "alice@example.com"}),
    Task("Email bob@example.com with the subject 'Report' and tell him the report is ready.", "send_email",
         {"to": "bob@example.com", "subject": "report"}),
    Task("Write an email to carol@example.org that the invoice was paid.", "send_email",
         {"to": "carol@example.org"}),
    Task("Send dave@example.com a thank-you email.", "send_email", {"to": "dave@example.com"}),
    Task("Email team@example.com that the server is back up.", "send_email", {"to": "team@example.com"}),
    Task("Say hello.", FINAL_ANSWER),
    Task("What is your name?", FINAL_ANSWER),
    Task("Thank you, that's all.", FINAL_ANSWER),
    Task("Translate 'good morning' into French.", FINAL_ANSWER),
]

_CURRENCY = ("amount", "from_currency", "to_currency")
_UNIT = ("value", "from_unit", "to_unit")

EXTENDED_TASKS = [
    # web search against document search: where to look is the only difference
    Task("Search the web for reviews of the Framework laptop.", "search_web", {"query": "Framework"},
         ("query",), "imperative"),
    Task("Who won the Tour de France this year? Look it up online.", "search_web", {"query": "Tour de France"},
         ("query",), "question"),
    Task("look up on the internet when the next solar eclipse is", "search_web", {"query": "eclipse"},
         ("query",), "lowercase"),
    Task("serch the internet for cheep flights to lisbon", "search_web", {"query": "lisbon"}, ("query",), "typos"),
    Task("My brother keeps arguing with me about this and I want to settle it: find on the web what year the "
         "Eiffel Tower was finished.", "search_web", {"query": "Eiffel Tower"}, ("query",), "context"),
    Task("What does our employee handbook say about parental leave?", "search_documents", {"query": "parental"},
         ("query",), "question"),
    Task("expense policy - check our internal docs", "search_documents", {"query": "expense"}, ("query",), "terse"),
    Task("Could you please be so kind as to look through our company documents and find whatever they say about "
         "working from home? Thanks a lot.", "search_documents", {"query": "home"}, ("query",), "polite"),
    Task("find the onboarding checklist in our documnets", "search_documents", {"query": "onboarding"},
         ("query",), "typos"),
    Task("I'm new here and my manager is out today. Search the company files for how to request a new laptop.",
         "search_documents", {"query": "laptop"}, ("query",), "context"),
    Task("What do our travel documents say about currency exchange fees?", "search_documents",
         {"query": "currency"}, ("query",), "question"),
    # currency against units: both "convert", both take an amount
    Task("EUR->USD 250?", "convert_currency", {"amount": 250, "from_currency": "EUR", "to_currency": "USD"},
         _CURRENCY, "terse"),
    Task("How much is 100 GBP in JPY?", "convert_currency", {"amount": 100, "from_currency": "GBP",
                                                             "to_currency": "JPY"}, _CURRENCY, "question"),
    Task("Would you kindly convert 75 US dollars into euros for me, please?", "convert_currency",
         {"amount": 75, "from_currency": "USD", "to_currency": "EUR"}, ("amount", "to_currency"), "polite"),
    Task("convert 1200 chf to eur", "convert_currency", {"amount": 1200, "from_currency": "CHF",
                                                         "to_currency": "EUR"}, _CURRENCY, "lowercase"),
    Task("I'm booking a hotel in Toronto and the price is listed as 340 CAD. What is that in USD?",
         "convert_currency", {"amount": 340, "from_currency": "CAD", "to_currency": "USD"}, _CURRENCY, "context"),
    Task("Convert 5 miles to kilometers.", "convert_units", {"value": 5, "from_unit": "mile",
                                                             "to_unit": "kilometer"}, _UNIT, "imperative"),
    Task("How many pounds is 3 kilograms?", "convert_units", {"value": 3, "from_unit": "kilogram",
                                                              "to_unit": "pound"}, _UNIT, "question"),
    Task("30 celsius -> fahrenheit", "convert_units", {"value": 30, "from_unit": "celsius",
                                                       "to_unit": "fahrenheit"}, _UNIT, "terse"),
    Task("conver 12 inchs to centimeters", "convert_units", {"value": 12, "from_unit": "inch",
                                                             "to_unit": "centimeter"}, _UNIT, "typos"),
    Task("My recipe is from an American blog and I only have metric measuring jugs. How many liters is "
         "2 gallons?", "convert_units", {"value": 2, "from_unit": "gallon", "to_unit": "liter"}, _UNIT, "context"),
    # a stock ticker: a span, or the company's name
    Task("AAPL price", "get_stock_price", {"ticker": "AAPL"}, ("ticker",), "terse"),
    Task("What is Microsoft's share price right now?", "get_stock_price", {"ticker": "MSFT"}, (), "question"),
    Task("whats nvda trading at today", "get_stock_price", {"ticker": "NVDA"}, ("ticker",), "lowercase"),
    Task("Hello! When you have a moment, could you check the current stock price of the company with the ticker "
         "TSLA for me?", "get_stock_price", {"ticker": "TSLA"}, ("ticker",), "polite"),
    # a quoted text to work on
    Task("Count the words in this sentence: 'The quick brown fox jumps over the lazy dog.'", "count_words",
         {"text": "quick brown fox"}, ("text",), "imperative"),
    Task("How many words are in 'To be or not to be, that is the question'?", "count_words",
         {"text": "not to be"}, ("text",), "question"),
    Task("cuont the wrods in: small models choose, they do not write facts", "count_words",
         {"text": "small models choose"}, ("text",), "typos"),
    Task("I have to keep my bio short for the conference site. Here it is: 'I build tools for local language "
         "models.' How many words is that?", "count_words", {"text": "local language models"}, ("text",), "context"),
    Task("Translate 'where is the train station' into German.", "translate",
         {"text": "train station", "target_language": "German"}, ("text", "target_language"), "imperative"),
    Task("How do you say 'thank you very much' in Japanese?", "translate",
         {"text": "thank you", "target_language": "Japanese"}, ("text", "target_language"), "question"),
    Task("translate i love this city to spanish", "translate",
         {"text": "love this city", "target_language": "spanish"}, ("text", "target_language"), "lowercase"),
    Task("I would be very grateful if you could translate the sentence 'The meeting has been moved to Friday' "
         "into Italian for my colleague.", "translate", {"text": "moved to Friday", "target_language": "Italian"},
         ("text", "target_language"), "polite"),
    # a time: a reminder's, or a city's clock
    Task("Remind me to call the dentist at 4pm.", "set_reminder", {"text": "dentist", "time": "4pm"},
         ("text", "time"), "imperative"),
    Task("reminder: buy milk, 6:30", "set_reminder", {"text": "milk", "time": "6:30"}, ("text", "time"), "terse"),
    Task("set a remminder for tomorow 9am to water the plants", "set_reminder",
         {"text": "water the plants", "time": "9am"}, ("text", "time"), "typos"),
    Task("We're having people over on Saturday and I always forget things. Please remind me at 10am on Saturday "
         "to pick up the cake.", "set_reminder", {"text": "cake", "time": "10am"}, ("text", "time"), "context"),
    Task("What time is it in Sydney?", "get_local_time", {"city": "Sydney"}, ("city",), "question"),
    Task("time in Dubai now", "get_local_time", {"city": "Dubai"}, ("city",), "terse"),
    Task("Sorry to bother you, but could you tell me what the local time is in Buenos Aires at the moment?",
         "get_local_time", {"city": "Buenos Aires"}, ("city",), "polite"),
    # the original tools, phrased otherwise, among more tools
    Task("is it sunny in lisbon right now", "get_weather", {"city": "lisbon"}, ("city",), "lowercase"),
    Task("whats the wheather like in Amsterdam", "get_weather", {"city": "Amsterdam"}, ("city",), "typos"),
    Task("I'm flying to Rome tomorrow morning for a conference and still packing. What's the weather there in "
         "fahrenheit?", "get_weather", {"city": "Rome", "unit": "fahrenheit"}, ("city", "unit"), "context"),
    Task("23*19?", "calculator", {"expression": 437}, (), "terse"),
    Task("wat is 250 divded by 8", "calculator", {"expression": 31.25}, (), "typos"),
    Task("We split the restaurant bill of 184 dollars between 4 people. How much does each person pay?",
         "calculator", {"expression": 46}, (), "context"),
    Task("Could you please send an email to maria@example.com letting her know that the report is finished?",
         "send_email", {"to": "maria@example.com"}, ("to",), "polite"),
    Task("email joe@example.net and tell him lunch is at noon", "send_email", {"to": "joe@example.net"},
         ("to",), "lowercase"),
    Task("mail ops@example.com: backup done", "send_email", {"to": "ops@example.com"}, ("to",), "terse"),
    # no tool: a greeting, what the model knows, the conversation itself
    Task("Hi there, how are you today?", FINAL_ANSWER, style="question"),
    Task("thanks, bye", FINAL_ANSWER, style="lowercase"),
    Task("What is the capital of Italy?", FINAL_ANSWER, style="question"),
    Task("Tell me what you can help me with.", FINAL_ANSWER, style="imperative"),
    Task("What have we talked about so far in this conversation?", FINAL_ANSWER, style="question"),
    Task("Before we start, I just wanted to say thank you so much for all your help yesterday, it really made a "
         "difference to my week.", FINAL_ANSWER, style="polite"),
]

ALL_TASKS = TASKS + EXTENDED_TASKS
SETS = {"original": TaskSet("original", TOOLS, TASKS), "extended": TaskSet("extended", EXTENDED_TOOLS, EXTENDED_TASKS)}
