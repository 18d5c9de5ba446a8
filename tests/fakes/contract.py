"""Hold a request or webhook to a vendor's own OpenAPI document (3.0 or 3.1), as a list of errors.

    doc = Contract.load("infobip-sms.openapi.json")
    doc.request("POST", "/sms/3/messages", query, content_type, body)   # [] when it conforms
    doc.webhook("receive-outbound-sms-message-reports-v3", content_type, body)
    doc.check(httpx_request)                                            # a builder's output

Schemas are checked with openapi-schema-validator (OAS30Validator or OAS31Validator, by the
document's `openapi` version): the library openapi-core validates with. openapi-core itself
is not used here: it matches requests by the documented server host (vendor hosts, while the
fakes listen on loopback), reads webhooks only from 3.1 `webhooks` (Vonage's and the Sinch
copy's are 3.0 `x-webhooks` and operation `callbacks`), and has no Swagger 2.0 support (none
of the five documents is 2.0). Objects the document declares with `properties` are closed
(unknown fields are errors), so a typo in a builder fails instead of being ignored by the
vendor; `open_objects=True` keeps them as published.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from jsonschema import FormatChecker
from openapi_schema_validator import (
    OAS30Validator,
    OAS31Validator,
    oas30_format_checker,
    oas31_format_checker,
)

from connector import http

SPECS = Path(__file__).with_name("specs")
FORM = "application/x-www-form-urlencoded"
_COMPOSITION = ("allOf", "anyOf", "oneOf", "not")
_INT = re.compile(r"-?\d+")
Pairs = Sequence[tuple[str, str]]


class Contract:
    """One vendor document: find an operation or webhook and list what a message breaks."""

    def __init__(self, doc: dict[str, Any], *, open_objects: bool = False,
                 formats: Mapping[str, Callable[[object], bool]] | None = None) -> None:
        """`formats` replaces the checks of named string formats (see vendor_contracts)."""
        self.doc = doc
        self.open_objects = open_objects
        v31 = str(doc.get("openapi", "")).startswith("3.1")
        self._validator = OAS31Validator if v31 else OAS30Validator
        base = oas31_format_checker if v31 else oas30_format_checker
        self._formats = FormatChecker(formats=())
        self._formats.checkers = {**base.checkers}
        for name, check in (formats or {}).items():
            self._formats.checks(name)(check)
        self._prefixes = sorted({urlsplit(s["url"]).path.rstrip("/")
                                 for s in _servers(doc)}, key=len, reverse=True)

    @classmethod
    def load(cls, name: str, *, open_objects: bool = False,
             formats: Mapping[str, Callable[[object], bool]] | None = None) -> Contract:
        return cls(_read(name), open_objects=open_objects, formats=formats)

    # -- finding -------------------------------------------------------------------------------

    def operation(self, method: str, path: str) -> tuple[dict[str, Any], dict[str, str]] | None:
        """The operation (with path-level parameters merged) and the path parameters."""
        for prefix in [*self._prefixes, ""]:
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):] or "/"
            for template, item in self.doc["paths"].items():
                found = _match(template, rest)
                if found is not None and method.lower() in item:
                    op = dict(item[method.lower()])
                    op["parameters"] = [*item.get("parameters", []), *op.get("parameters", [])]
                    return op, found
        return None

    def webhook_operation(self, name: str) -> dict[str, Any] | None:
        """A webhook by name: 3.1 `webhooks`, 3.0 `x-webhooks`, or an operation's `callbacks`."""
        for key in ("webhooks", "x-webhooks"):
            item = self.doc.get(key, {}).get(name)
            if item is not None and "post" not in item and len(item) == 1:
                (item,) = item.values()  # keyed by its URL's runtime expression (Vonage v1)
            if item is not None:
                return dict(item.get("post") or next(iter(item.values())))
        for path_item in self.doc["paths"].values():
            for op in path_item.values():
                callbacks = op.get("callbacks", {}) if isinstance(op, dict) else {}
                if name in callbacks:
                    (expression,) = callbacks[name].values()
                    return dict(next(iter(expression.values())))
        return None

    # -- checking ------------------------------------------------------------------------------

    def request(self, method: str, path: str, query: Pairs, content_type: str | None,
                body: bytes) -> list[str]:
        """Errors of one request to this vendor (empty: it conforms)."""
        found = self.operation(method, path)
        if found is None:
            return [f"{method} {path}: no such operation in the document"]
        op, path_params = found
        errors = self._parameters(op, path_params, query)
        return errors + self._body(op, content_type, body)

    def request_body(self, method: str, template: str, content_type: str | None,
                     body: bytes) -> list[str]:
        """Errors of a body alone, for the operation at a path template."""
        op = self.doc["paths"][template][method.lower()]
        return self._body(op, content_type, body)

    def response_body(self, method: str, template: str, status: int, body: bytes) -> list[str]:
        """Errors of a JSON answer body, for the operation at a path template."""
        op = self.doc["paths"][template][method.lower()]
        answer = self.deref(op["responses"][str(status)])
        schema = self._schema(answer["content"]["application/json"]["schema"])
        return self._errors(schema, json.loads(body), "body")

    def webhook(self, name: str, content_type: str | None, body: bytes,
                query: Pairs = ()) -> list[str]:
        """Errors of one callback this vendor sends (a POST body, or GET query fields)."""
        op = self.webhook_operation(name)
        if op is None:
            return [f"webhook {name}: not in the document"]
        errors = self._parameters(op, {}, query)
        if "requestBody" in op or body:
            errors += self._body(op, content_type, body)
        return errors

    def check(self, request: http.Request) -> list[str]:
        """Errors of a request a connector builder made."""
        body = request.content
        return self.request(request.method, httpx.URL(request.url).path,
                            parse_qsl(urlsplit(request.url).query, keep_blank_values=True),
                            request.headers.get("content-type") if body else None, body)

    def _parameters(self, op: dict[str, Any], path_params: dict[str, str],
                    query: Pairs) -> list[str]:
        given = {"path": _group(path_params.items()), "query": _group(query)}
        errors: list[str] = []
        declared: set[str] = set()
        for raw in op.get("parameters", []):
            param = self.deref(raw)
            where, name = param["in"], param["name"]
            if where not in given:
                continue  # headers and cookies: the fakes check auth themselves
            declared.add(name) if where == "query" else None
            values = given[where].get(name)
            if values is None:
                if param.get("required"):
                    errors.append(f"{where} parameter {name}: required")
                continue
            schema = self._schema(param.get("schema", {}))
            value = _typed(values, schema)
            errors += self._errors(schema, value, f"{where} parameter {name}")
        unknown = sorted(set(given["query"]) - declared)
        if unknown and not self.open_objects:
            errors.append(f"query parameters not in the document: {', '.join(unknown)}")
        return errors

    def _body(self, op: dict[str, Any], content_type: str | None, body: bytes) -> list[str]:
        declared = self.deref(op.get("requestBody", {}))
        content: dict[str, Any] = declared.get("content", {})
        if not body:
            return ["body: required"] if declared.get("required") else []
        media = (content_type or "").split(";")[0].strip().lower()
        if media not in content:
            return [f"body: content type {media or '(none)'} is not one of {sorted(content)}"]
        schema = self._schema(content[media].get("schema", {}))
        errors: list[str] = []
        if media == FORM:
            instance: Any = _form(parse_qsl(body.decode(), keep_blank_values=True), schema,
                                  errors)
        else:
            try:
                instance = json.loads(body)
            except ValueError:
                return ["body: not JSON"]
        return errors + self._errors(schema, instance, "body")

    def _errors(self, schema: dict[str, Any], instance: Any, what: str) -> list[str]:
        validator = self._validator(schema, format_checker=self._formats)
        found = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
        return [f"{what}/{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}"
                for e in found]

    # -- schemas -------------------------------------------------------------------------------

    def deref(self, node: dict[str, Any]) -> dict[str, Any]:
        """A node with its $ref chain followed (parameters, bodies, examples)."""
        while isinstance(node, dict) and "$ref" in node:
            node = _pointer(self.doc, node["$ref"])
        return node

    def _schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Refs inlined (cycles left as refs into the attached components), objects closed."""
        inlined: dict[str, Any] = _inline(self.doc, schema, (), closed=not self.open_objects)
        return {**inlined, "components": self.doc.get("components", {})}


@cache
def _read(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SPECS / name).read_text(encoding="utf-8"))
    return loaded


def _servers(doc: dict[str, Any]) -> Iterable[dict[str, Any]]:
    yield from doc.get("servers", [])
    for item in doc.get("paths", {}).values():
        yield from item.get("servers", [])


def _match(template: str, path: str) -> dict[str, str] | None:
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    found = re.fullmatch(pattern, path)
    return None if found is None else found.groupdict()


def _pointer(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _inline(doc: dict[str, Any], node: Any, seen: tuple[str, ...], *, closed: bool) -> Any:
    if isinstance(node, list):
        return [_inline(doc, item, seen, closed=closed) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        if ref in seen:
            return node  # recursive schema: resolved against the attached components
        return _inline(doc, _pointer(doc, ref), (*seen, ref), closed=closed)
    out: dict[str, Any] = {}
    for key, value in node.items():
        # Closing a branch of a composition would refuse the other branches' fields.
        inner = closed and key not in _COMPOSITION
        if key in ("properties", "patternProperties"):
            out[key] = {k: _inline(doc, v, seen, closed=closed) for k, v in value.items()}
        else:
            out[key] = _inline(doc, value, seen, closed=inner)
    if closed and "properties" in out and "additionalProperties" not in out and not any(
            k in out for k in (*_COMPOSITION, "discriminator")):
        out["additionalProperties"] = False
    return out


def _group(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped


def _typed(values: list[str], schema: dict[str, Any]) -> Any:
    """Form or query strings as the JSON type the schema asks for (left as text if they can't)."""
    if schema.get("type") == "array":
        return [_coerce(v, schema.get("items", {})) for v in values]
    return _coerce(values[-1], schema)


def _coerce(value: str, schema: dict[str, Any]) -> Any:
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "boolean" in kinds and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if "integer" in kinds and _INT.fullmatch(value):
        return int(value)
    if "number" in kinds:
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _form(pairs: Pairs, schema: dict[str, Any], errors: list[str]) -> dict[str, Any]:
    """Form fields as a typed object; a field repeated where the schema wants one value is an
    error (which of the values the vendor would take is not documented)."""
    props: dict[str, Any] = copy.deepcopy(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        props.update(part.get("properties", {}))
    grouped = _group(pairs)
    for key, values in grouped.items():
        if len(values) > 1 and props.get(key, {}).get("type") != "array":
            errors.append(f"body/{key}: sent {len(values)} times but is not an array parameter")
    return {key: _typed(values, props.get(key, {})) for key, values in grouped.items()}
