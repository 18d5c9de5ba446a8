"""Validate Twilio form requests/responses against Twilio's official OpenAPI document."""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from openapi_schema_validator import OAS30Validator, oas30_format_checker

# Vendored verbatim from twilio/twilio-oai (spec/json/twilio_api_v2010.json, Messages paths only).
SPEC_PATH = Path(__file__).with_name("specs") / "twilio-messages.openapi.json"
MESSAGES_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
FORM = "application/x-www-form-urlencoded"

FormPairs = list[tuple[str, str]]


@cache
def spec() -> dict[str, Any]:
    """The parsed OpenAPI document (loaded once)."""
    loaded: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    return loaded


def _resolve(node: Any, root: dict[str, Any], depth: int = 0) -> Any:
    """Inline local `#/...` $refs so the validator sees one self-contained schema."""
    if depth > 32:
        raise ValueError("$ref nesting too deep")
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            target: Any = root
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]
            return _resolve(target, root, depth + 1)
        return {k: _resolve(v, root, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root, depth + 1) for v in node]
    return node


@cache
def create_request_schema() -> dict[str, Any]:
    """Resolved request-body schema of CreateMessage, closed to unknown parameters."""
    root = spec()
    op = root["paths"][MESSAGES_PATH]["post"]
    schema: dict[str, Any] = copy.deepcopy(
        _resolve(op["requestBody"]["content"][FORM]["schema"], root)
    )
    # The spec leaves objects open; we close it so typos/unsupported params surface in tests.
    schema["additionalProperties"] = False
    return schema


@cache
def message_schema() -> dict[str, Any]:
    """Resolved `api.v2010.account.message` response schema."""
    root = spec()
    resolved: dict[str, Any] = _resolve(
        root["components"]["schemas"]["api.v2010.account.message"], root
    )
    return resolved


_INT = re.compile(r"-?\d+")


def _coerce(value: str, prop: dict[str, Any]) -> Any:
    """Turn a form string into the JSON type its schema expects; leave it a string if it can't be."""
    kind = prop.get("type")
    if kind == "boolean" and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if kind == "integer" and _INT.fullmatch(value):
        return int(value)
    if kind == "number":
        try:
            return float(value)
        except ValueError:
            return value
    return value


def form_to_instance(pairs: FormPairs) -> tuple[dict[str, Any], list[str]]:
    """Group form pairs into a typed JSON object per the schema; also return repeat-key errors."""
    props: dict[str, Any] = create_request_schema()["properties"]
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    instance: dict[str, Any] = {}
    errors: list[str] = []
    for key, values in grouped.items():
        prop = props.get(key)
        if prop is None:
            instance[key] = values[0]  # the closed schema reports it as unknown
        elif prop.get("type") == "array":
            instance[key] = [_coerce(v, prop.get("items", {})) for v in values]
        else:
            if len(values) > 1:
                errors.append(f"{key}: sent {len(values)} times but is not an array parameter")
            instance[key] = _coerce(values[-1], prop)
    return instance, errors


def validate_create_form(pairs: FormPairs) -> list[str]:
    """Schema errors for a CreateMessage form body (empty list = valid)."""
    instance, errors = form_to_instance(pairs)
    validator = OAS30Validator(create_request_schema(), format_checker=oas30_format_checker)
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(e.path)):
        where = "/".join(str(p) for p in err.path) or "<body>"
        errors.append(f"{where}: {err.message}")
    return errors


def validate_message(resource: dict[str, Any]) -> list[str]:
    """Schema errors for a Message resource JSON (used to keep the fake's output honest)."""
    validator = OAS30Validator(message_schema(), format_checker=oas30_format_checker)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(resource)]
