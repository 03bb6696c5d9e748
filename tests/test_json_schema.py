"""The one JSON-schema walker reaches every subschema and only subschemas; one list of refused keywords for all."""

import copy
import json

import llguidance
import pytest

from agents import ToolDefinitionError, tool
from agents.steps import MAX_INTEGER, MAX_ITEMS, bounded
from agents.tools import tool_schema
from core.constrain import TokenConstraint
from core.json_schema import UNSUPPORTED_KEYWORDS, check_supported, map_schema
from core.tokenizer import Tokenizer

from conftest import tiny_bpe_tokenizer

LEAF = {"type": "string"}
# Every keyword that holds a schema, a list of schemas or a map of names to schemas, in draft 7 and 2020-12.
ONE = ["items", "additionalItems", "contains", "not", "if", "then", "else", "additionalProperties", "propertyNames",
       "unevaluatedItems", "unevaluatedProperties", "contentSchema"]
MANY = ["allOf", "anyOf", "oneOf", "prefixItems", "items"]
NAMED = ["properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"]


def mark(node: dict) -> dict:
    return {**node, "marked": True}


@pytest.mark.parametrize("keyword", ONE)
def test_a_keyword_holding_one_schema_is_walked(keyword):
    assert map_schema({keyword: LEAF}, mark) == {keyword: {**LEAF, "marked": True}, "marked": True}


@pytest.mark.parametrize("keyword", MANY)
def test_a_keyword_holding_a_list_of_schemas_is_walked(keyword):
    assert map_schema({keyword: [LEAF, True, LEAF]}, mark)[keyword] == [mark(LEAF), True, mark(LEAF)]


@pytest.mark.parametrize("keyword", NAMED)
def test_a_map_of_schemas_is_walked_and_its_names_are_not_keywords(keyword):
    schema = {keyword: {"const": LEAF, "title": LEAF, "enum": LEAF, "properties": LEAF}}
    assert map_schema(schema, mark)[keyword] == dict.fromkeys(("const", "title", "enum", "properties"), mark(LEAF))


def test_data_is_not_walked_and_the_input_is_not_changed():
    data = {"properties": {"x": LEAF}, "type": "string"}
    schema = {"type": "object", "properties": {"a": {"type": "object", "const": data, "enum": [data],
                                                     "default": data, "examples": [data], "required": ["a"]}}}
    before = copy.deepcopy(schema)
    mapped = map_schema(schema, mark)
    assert schema == before
    assert mapped["properties"]["a"] == {**schema["properties"]["a"], "marked": True}


def test_nested_defs_and_deep_nesting_are_all_reached():
    schema = {"$defs": {"A": {"$defs": {"B": {"anyOf": [LEAF, {"items": LEAF}]}}, "properties": {"b": LEAF}}},
              "type": "array", "items": {"anyOf": [{"type": "object", "additionalProperties": LEAF}, LEAF]},
              "prefixItems": [{"allOf": [{"properties": {"c": {"oneOf": [LEAF]}}}]}]}
    visited = []
    map_schema(schema, lambda node: visited.append(node) or node)
    assert len(visited) == 15 and visited.count(LEAF) == 6  # every schema object, once
    assert visited[-1]["type"] == "array"  # subschemas before the object that holds them


def test_bounding_reaches_strings_inside_any_of_inside_items():
    schema = {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}},
        "pair": {"type": "array", "prefixItems": [{"type": "string", "enum": ["a"]}, {"type": ["string", "null"]}]},
        "map": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 3}}}}
    props = bounded(schema, 40)["properties"]
    assert props["tags"]["maxItems"] == MAX_ITEMS
    assert props["tags"]["items"]["anyOf"] == [{"type": "string", "maxLength": 40},
                                               {"type": "integer", "minimum": -MAX_INTEGER, "maximum": MAX_INTEGER},
                                               {"type": "null"}]
    assert props["pair"]["prefixItems"] == [{"type": "string", "enum": ["a"]},
                                            {"type": ["string", "null"], "maxLength": 40}]
    assert props["map"]["additionalProperties"] == {"type": "string", "maxLength": 3}  # a bound given is kept


def test_tool_schemas_inline_nested_defs_through_every_keyword():
    defs = {"Leaf": {"title": "Leaf", "type": "string"},
            "Pair": {"title": "Pair", "type": "array", "prefixItems": [{"$ref": "#/$defs/Leaf"}, {"type": "integer"}]}}
    schema = {"title": "args", "type": "object", "$defs": defs, "properties": {
        "title": {"anyOf": [{"$ref": "#/$defs/Pair"}, {"type": "null"}], "title": "Title"},
        "named": {"type": "object", "additionalProperties": {"$ref": "#/$defs/Leaf", "description": "a leaf"}}}}
    assert tool_schema(schema, "t") == {"type": "object", "properties": {
        "title": {"anyOf": [{"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
                            {"type": "null"}]},
        "named": {"type": "object", "additionalProperties": {"type": "string", "description": "a leaf"}}}}


@pytest.mark.parametrize("keyword", UNSUPPORTED_KEYWORDS)
def test_every_refused_keyword_is_one_llguidance_refuses(keyword):
    error = llguidance.LLMatcher.validate_grammar(llguidance.LLMatcher.grammar_from_json_schema({keyword: {}}))
    assert f'Unimplemented keys: ["{keyword}"]' in error


# The rest of the draft 2020-12 vocabulary (and draft 7's additionalItems and definitions), with a valid value each.
ACCEPTED = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "x", "$anchor": "a", "$comment": "c",
            "$ref": "#", "$defs": {}, "definitions": {}, "allOf": [{}], "anyOf": [{}], "oneOf": [{}],
            "prefixItems": [{}], "items": {}, "additionalItems": {}, "properties": {}, "patternProperties": {},
            "additionalProperties": {}, "type": "string", "enum": ["a"], "const": "a", "multipleOf": 2, "maximum": 9,
            "exclusiveMaximum": 9, "minimum": 1, "exclusiveMinimum": 1, "maxLength": 9, "minLength": 1,
            "pattern": "a+", "maxItems": 9, "minItems": 1, "maxProperties": 9, "minProperties": 1, "required": [],
            "format": "date", "title": "t", "description": "d", "default": "a", "deprecated": False,
            "readOnly": False, "writeOnly": False, "examples": ["a"], "contentEncoding": "base64",
            "contentMediaType": "text/plain", "contentSchema": {}, "x-anything": {"not": {}}}


@pytest.mark.parametrize(("keyword", "value"), ACCEPTED.items())
def test_every_other_keyword_compiles(keyword, value):
    check_supported({keyword: value})
    assert llguidance.LLMatcher.validate_grammar(llguidance.LLMatcher.grammar_from_json_schema({keyword: value})) == ""


def test_constraints_and_tools_refuse_an_unsupported_keyword_with_the_same_message():
    schema = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"},
                                                        "contains": {"const": "a"}}}}
    tokenizer = Tokenizer(tiny_bpe_tokenizer(), None, {}, [2])
    with pytest.raises(ValueError, match="'contains' cannot be enforced by constrained decoding") as refused:
        TokenConstraint.compile(tokenizer, json_schema=schema)
    with pytest.raises(ToolDefinitionError) as tool_refused:
        tool_schema(schema, "t")
    assert str(tool_refused.value) == f"tool 't': {refused.value}"



def test_a_set_parameter_is_asked_for_as_an_array_and_arrives_as_a_set():
    def tagged(tags: set[str]) -> str:
        """Tags as a set: pydantic's schema says uniqueItems, which decoding cannot enforce."""
        return ",".join(sorted(tags))

    made = tool(tagged)
    assert "uniqueItems" not in json.dumps(made.parameters)
    assert made.run({"tags": ["b", "a", "b"]}) == "a,b"


def test_a_lenient_schema_is_left_to_llguidance():
    schema = {"x-guidance": {"lenient": True}, "type": "string", "not": {"const": "a"}}
    check_supported(schema)
    TokenConstraint.compile(Tokenizer(tiny_bpe_tokenizer(), None, {}, [2]), json_schema=schema)
