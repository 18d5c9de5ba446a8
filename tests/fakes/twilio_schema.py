"""Validate Twilio form requests/responses against Twilio's official OpenAPI document."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from openapi_schema_validator import OAS30Validator, oas30_format_checker

from .contract import Contract

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
def message_schema() -> dict[str, Any]:
    """Resolved `api.v2010.account.message` response schema."""
    root = spec()
    resolved: dict[str, Any] = _resolve(
        root["components"]["schemas"]["api.v2010.account.message"], root
    )
    return resolved


def validate_create_form(pairs: FormPairs) -> list[str]:
    """Schema errors for a CreateMessage form body (empty list = valid), by the one validator
    every fake uses (tests/fakes/contract.py)."""
    body = urlencode(pairs).encode()
    return Contract.load("twilio-messages.openapi.json").request_body(
        "POST", MESSAGES_PATH, FORM, body)


def validate_message(resource: dict[str, Any]) -> list[str]:
    """Schema errors for a Message resource JSON (used to keep the fake's output honest)."""
    validator = OAS30Validator(message_schema(), format_checker=oas30_format_checker)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(resource)]
