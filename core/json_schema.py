"""JSON schemas as trees: one walk over every subschema, and the keywords constrained decoding cannot enforce.

Every rewrite of a schema in llmkit (closing objects for constrained decoding, inlining a tool's
$refs, bounding the strings of an agent step) is `map_schema` with a function of one schema object.
Only this module knows which keywords hold subschemas; the values of all others (const, enum,
default, examples, required, ...) are data, and the names in `properties` are names, never keywords.

Does not validate instances, resolve $refs (agents.tools inlines its own) or follow remote references.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

# Keywords whose value is a schema, or a list of schemas (`items` too, as draft 7 tuples are written).
SUBSCHEMA_KEYWORDS = ("items", "prefixItems", "additionalItems", "contains", "allOf", "anyOf", "oneOf", "not", "if",
                      "then", "else", "additionalProperties", "propertyNames", "unevaluatedItems",
                      "unevaluatedProperties", "contentSchema")
# Keywords whose value maps names to schemas (a draft 7 `dependencies` entry may also be a list of names).
SCHEMA_MAP_KEYWORDS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")
# Keywords llguidance refuses ("Unimplemented keys"); it ignores keywords it does not know, so this list is the
# boundary, not a list of the supported ones. tests/test_json_schema.py checks it against llguidance.
UNSUPPORTED_KEYWORDS = ("not", "if", "then", "else", "contains", "minContains", "maxContains", "uniqueItems",
                        "propertyNames", "dependentSchemas", "dependentRequired", "dependencies",
                        "unevaluatedItems", "unevaluatedProperties", "$dynamicRef", "$dynamicAnchor",
                        "$recursiveRef", "$recursiveAnchor")


class UnsupportedSchemaError(ValueError):
    """A schema uses a keyword constrained decoding cannot enforce."""


def map_schema(schema: Any, fn: Callable[[dict], Any]) -> Any:
    """A copy of `schema` in which every schema object is replaced by `fn(node)`, its subschemas first.

    `fn` gets a fresh dict whose subschemas are already mapped, and may return it changed. Boolean
    schemas and data are copied as they are; `schema` itself is not modified.
    """
    if not isinstance(schema, dict):
        return schema
    node = {}
    for key, value in schema.items():
        if key in SCHEMA_MAP_KEYWORDS and isinstance(value, dict):
            node[key] = {name: map_schema(sub, fn) for name, sub in value.items()}
        elif key in SUBSCHEMA_KEYWORDS and isinstance(value, list):
            node[key] = [map_schema(sub, fn) for sub in value]
        elif key in SUBSCHEMA_KEYWORDS:
            node[key] = map_schema(value, fn)
        else:
            node[key] = value
    return fn(node)


def check_supported(schema: Any) -> None:
    """Raise UnsupportedSchemaError for the first keyword in UNSUPPORTED_KEYWORDS, with the object that uses it.

    A schema that asks llguidance to ignore such keywords (`"x-guidance": {"lenient": true}`) is not checked.
    """
    if isinstance(schema, dict) and schema.get("x-guidance", {}).get("lenient"):
        return

    def check(node: dict) -> dict:
        for key in node:
            if key in UNSUPPORTED_KEYWORDS:
                raise UnsupportedSchemaError(
                    f"JSON schema keyword {key!r} cannot be enforced by constrained decoding (in "
                    f"{json.dumps(node, default=str)[:200]}); remove it or express the rule with other keywords")
        return node

    map_schema(schema, check)
