"""`response_format`: the JSON a chat must answer with, and the part of JSON Schema that Hearth
enforces while generating.

The worker turns a schema into a llama.cpp grammar with llama-cpp-python's converter
(`llama_cpp.llama_grammar`), which enforces some keywords and silently drops others. A dropped
keyword would give an answer that may not validate, so every schema is walked here, before
anything is queued: a keyword the converter cannot enforce is refused with a 400 naming it and
where it is. What is sent on is the schema reduced to what the grammar enforces (annotations
such as `title` and `description` dropped, a missing `type` made explicit), so the worker's
grammar cache sees one entry per distinct constraint.
"""

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.errors import HearthError

PARAM = "response_format.json_schema.schema"
JSON_OBJECT: dict[str, Any] = {"type": "object"}  # `json_object`: any JSON object

# Bounds on one schema, so that its grammar stays small enough to build and to run per token:
# nesting and properties as OpenAI's Structured Outputs allow, counts as the grammar unrolls
# them (`maxLength: 1000` is a thousand nested optional rules).
MAX_DEPTH = 32  # subschemas inside subschemas
MAX_NODES = 5000  # subschemas in all
MAX_ENUM = 1000  # values of one `enum`
MAX_COUNT = 1000  # minItems, maxItems, minLength, maxLength

# Keywords that constrain a value but that the converter would drop: refused.
UNSUPPORTED = {
    "not", "if", "then", "else", "dependentSchemas", "dependencies", "dependentRequired",
    "patternProperties", "propertyNames", "unevaluatedProperties", "unevaluatedItems", "additionalItems",
    "minProperties", "maxProperties", "contains", "minContains", "maxContains", "uniqueItems",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    # The converter's regular expressions admit quotes and control characters inside a string
    # (`.`) and produce grammars llama.cpp cannot parse (`\d`): not enforceable as they are.
    "pattern",
    "$dynamicRef", "$dynamicAnchor", "$recursiveRef", "$recursiveAnchor",
}
# What each type may be constrained by; keywords of other types do not apply to its values.
TYPE_KEYWORDS = {
    "object": ("properties", "required", "additionalProperties", "allOf"),
    "array": ("items", "prefixItems", "minItems", "maxItems"),
    "string": ("minLength", "maxLength", "format"),
    "number": (), "integer": (), "boolean": (), "null": (),
}
ALONE = ("$ref", "anyOf", "oneOf")  # the converter ignores every other keyword beside these
TYPED = [key for keys in TYPE_KEYWORDS.values() for key in keys]
FORMATS = {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
DEFS = ("$defs", "definitions")
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "number": (int, float), "integer": (int,),
    "boolean": (bool,), "null": (type(None),),
}


class TextFormat(BaseModel):
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    type: Literal["json_object"]


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: str | None = None
    schema_: Annotated[dict[str, Any], Field(alias="schema")]
    strict: bool | None = None  # Hearth enforces every schema it accepts, strict or not


class JsonSchemaFormat(BaseModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class Unsupported(Exception):
    def __init__(self, where: str, message: str):
        super().__init__(f"{message} (at {where})")


def grammar_schema(response_format: TextFormat | JsonObjectFormat | JsonSchemaFormat | None) -> dict[str, Any] | None:
    """The schema the answer is generated under (None: free text). Raises a 400 naming the
    first construct that cannot be enforced."""
    if response_format is None or isinstance(response_format, TextFormat):
        return None
    if isinstance(response_format, JsonObjectFormat):
        return dict(JSON_OBJECT)
    try:
        return enforced_schema(response_format.json_schema.schema_)
    except Unsupported as exc:
        raise HearthError(400, f"{PARAM}: {exc}", param=PARAM) from None


def enforced_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` reduced to what the grammar enforces; raises Unsupported naming the first
    construct that cannot be enforced (a response_format's schema, a function's parameters)."""
    try:  # a lone surrogate escape in a name or value: no text, it cannot be sent on
        json.dumps(schema, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise Unsupported("#", "the schema contains a lone surrogate escape (such as \\ud800), which is not valid Unicode text") from None
    return _Reducer().reduce_root(schema)


class _Reducer:
    def __init__(self) -> None:
        self.nodes = 0
        self.refs: dict[str, tuple[str, bool]] = {}  # where -> (ref, whether it must lead to an object with properties)

    def reduce_root(self, schema: dict[str, Any]) -> dict[str, Any]:
        reduced = self.reduce(schema, "#", 0)
        for where, (ref, needs_properties) in self.refs.items():
            target: Any = reduced
            for part in ref[2:].split("/"):  # through objects only, as the converter resolves it
                target = target.get(part) if isinstance(target, dict) else None
            if not isinstance(target, dict) or (needs_properties and "properties" not in target):
                wanted = "an object schema with properties" if needs_properties else "a schema Hearth enforces"
                raise Unsupported(where, f"$ref {ref!r} does not lead to {wanted}")
        return reduced

    def reduce(self, schema: Any, where: str, depth: int) -> dict[str, Any]:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise Unsupported(where, f"a schema may have at most {MAX_NODES} subschemas")
        if depth > MAX_DEPTH:
            raise Unsupported(where, f"a schema may nest at most {MAX_DEPTH} levels deep")
        if not isinstance(schema, dict):
            raise Unsupported(where, "a schema must be a JSON object (true and false schemas are not supported)")
        for key in schema:
            if key in UNSUPPORTED:
                raise Unsupported(where, f"`{key}` is not supported: Hearth cannot enforce it while generating")
        out = {key: {name: self.reduce(sub, f"{where}/{key}/{name}", depth + 1) for name, sub in _mapping(schema, key, where).items()}
               for key in DEFS if key in schema}
        # The converter follows the first of these it finds and ignores the rest of the node
        # (but for an enum's type, checked against its values).
        first = next((key for key in (*ALONE, "const", "enum") if key in schema), None)
        if first:
            beside = ("type",) if first in ("const", "enum") else ()
            ignored = [k for k in (*ALONE, "const", "enum", "type", *TYPED) if k in schema and k != first and k not in beside]
            if ignored:
                raise Unsupported(where, f"`{first}` cannot be combined with `{ignored[0]}` (the grammar would ignore it)")
        if first == "$ref":
            return {**out, **self._ref(schema["$ref"], where)}
        if first in ("anyOf", "oneOf"):
            # oneOf is enforced as anyOf: its alternatives should not overlap.
            return {**out, first: self._list(schema, first, where, depth)}
        if first in ("const", "enum"):
            return {**out, **self._values(schema, first, where)}
        kind = schema.get("type")
        if isinstance(kind, list):
            if not kind or any(t not in TYPE_KEYWORDS for t in kind) or len(set(kind)) != len(kind):
                raise Unsupported(where, f"`type` must list distinct types among {', '.join(TYPE_KEYWORDS)}")
            if any(k in schema for k in TYPED):
                raise Unsupported(where, "a list of types cannot be combined with keywords of those types (use anyOf)")
            return {**out, "type": kind}
        if kind is None:
            # No type: the first type whose keywords are present, as the converter picks it.
            # Answering with that type is valid: other types' keywords do not apply to it.
            kind = next((t for t, keys in TYPE_KEYWORDS.items() if any(k in schema for k in keys)), "object")
        elif kind not in TYPE_KEYWORDS:
            raise Unsupported(where, f"unknown type {kind!r}")
        typed = {"object": self._object, "array": self._array, "string": self._string}.get(kind)
        return {**out, "type": kind, **(typed(schema, where, depth) if typed else {})}

    def _ref(self, ref: Any, where: str) -> dict[str, Any]:
        if not isinstance(ref, str) or not ref.startswith("#/") or "~" in ref or "%" in ref:
            raise Unsupported(where, "only local references such as `#/$defs/Name` are supported")
        self.refs[where] = (ref, False)
        return {"$ref": ref}

    def _list(self, schema: dict[str, Any], key: str, where: str, depth: int) -> list[dict[str, Any]]:
        options = schema[key]
        if not isinstance(options, list) or not options:
            raise Unsupported(where, f"`{key}` must be a non-empty list of schemas")
        return [self.reduce(sub, f"{where}/{key}/{i}", depth + 1) for i, sub in enumerate(options)]

    def _values(self, schema: dict[str, Any], key: str, where: str) -> dict[str, Any]:
        values = [schema[key]] if key == "const" else schema[key]
        if not isinstance(values, list) or not 0 < len(values) <= MAX_ENUM:
            raise Unsupported(where, f"`enum` must list 1 to {MAX_ENUM} values")
        kind = schema.get("type")
        kinds = kind if isinstance(kind, list) else [] if kind is None else [kind]
        if any(t not in TYPE_KEYWORDS for t in kinds):
            raise Unsupported(where, f"unknown type {kind!r}")
        wrong = [v for v in values if kinds and not any(_is_type(v, t) for t in kinds)]
        if wrong:
            raise Unsupported(where, f"the value {wrong[0]!r} does not have the schema's type")
        return {key: schema[key]}

    def _count(self, schema: dict[str, Any], where: str, low: str, high: str) -> dict[str, int]:
        counts = {k: schema[k] for k in (low, high) if k in schema}
        for k, n in counts.items():
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_COUNT:
                raise Unsupported(where, f"`{k}` must be an integer from 0 to {MAX_COUNT}")
        if counts.get(low, 0) > counts.get(high, MAX_COUNT):
            raise Unsupported(where, f"`{low}` is larger than `{high}`")
        return counts

    def _string(self, schema: dict[str, Any], where: str, depth: int) -> dict[str, Any]:
        counts = self._count(schema, where, "minLength", "maxLength")
        if "format" not in schema:
            return counts
        if schema["format"] not in FORMATS:
            raise Unsupported(where, f"format {schema['format']!r} is not supported (only {', '.join(sorted(FORMATS))})")
        if counts:
            raise Unsupported(where, "`format` cannot be combined with minLength or maxLength")
        return {"format": schema["format"]}

    def _array(self, schema: dict[str, Any], where: str, depth: int) -> dict[str, Any]:
        counts = self._count(schema, where, "minItems", "maxItems")
        if "prefixItems" in schema:
            if "items" in schema or counts:
                raise Unsupported(where, "`prefixItems` cannot be combined with items, minItems or maxItems")
            return {"prefixItems": self._list(schema, "prefixItems", where, depth)}
        if "items" not in schema:
            if counts:
                raise Unsupported(where, "minItems and maxItems need `items`")
            return {}
        if isinstance(schema["items"], list):
            raise Unsupported(where, "`items` must be one schema (prefixItems describes a tuple)")
        return {"items": self.reduce(schema["items"], f"{where}/items", depth + 1), **counts}

    def _object(self, schema: dict[str, Any], where: str, depth: int) -> dict[str, Any]:
        if "allOf" in schema:
            return {"allOf": self._all_of(schema, where, depth)}
        out: dict[str, Any] = {}
        if "properties" in schema:
            properties = _mapping(schema, "properties", where)
            if "" in properties:
                raise Unsupported(where, "a property name may not be empty")
            out["properties"] = {name: self.reduce(sub, f"{where}/properties/{name}", depth + 1) for name, sub in properties.items()}
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
            raise Unsupported(where, "`required` must be a list of property names")
        missing = [name for name in required if name not in out.get("properties", {})]
        if missing:
            raise Unsupported(where, f"required property {missing[0]!r} is not in `properties`")
        if required:
            out["required"] = list(dict.fromkeys(required))
        extra = schema.get("additionalProperties")
        if isinstance(extra, bool):
            out["additionalProperties"] = extra
        elif extra is not None:
            out["additionalProperties"] = self.reduce(extra, f"{where}/additionalProperties", depth + 1)
        return out

    def _all_of(self, schema: dict[str, Any], where: str, depth: int) -> list[dict[str, Any]]:
        """The converter merges allOf's parts into one object with all their properties
        required and no others: valid when every part is an object with properties that
        allows the other parts' properties."""
        beside = [k for k in TYPE_KEYWORDS["object"] if k in schema and k != "allOf"]
        if beside:
            raise Unsupported(where, f"`allOf` cannot be combined with `{beside[0]}`")
        parts = self._list(schema, "allOf", where, depth)
        for i, part in enumerate(parts):
            if "$ref" in part:
                self.refs[f"{where}/allOf/{i}"] = (part["$ref"], True)
            elif "properties" not in part:
                raise Unsupported(f"{where}/allOf/{i}", "each part of `allOf` must be an object schema with properties")
            if len(parts) > 1 and part.get("additionalProperties", True) is not True:
                raise Unsupported(f"{where}/allOf/{i}", "a part of a several-part `allOf` cannot restrict additionalProperties")
        return parts


def _mapping(schema: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = schema[key]
    if not isinstance(value, dict):
        raise Unsupported(where, f"`{key}` must be an object")
    return value


def _is_type(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return kind == "boolean"
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _PYTHON_TYPES[kind])
