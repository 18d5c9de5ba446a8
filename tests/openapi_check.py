"""Hold real HTTP exchanges to openapi.yaml (openapi-core, OpenAPI 3.1).

    assert_conforms(method, url, request_headers, request_body,
                    status, response_headers, response_body)

validates the response against the documented operation and status (an undocumented path,
method or status fails), and, when the app answered 2xx, the request too: a request the app
accepted must be one the spec allows. Requests that were refused (4xx/5xx) are often wrong on
purpose, so they are not validated.

    assert_report_conforms(request_headers, request_body)

validates a delivery-report POST the connector made against `webhooks.deliveryReport`.

The spec's server is `{scheme}://{host}`, so any host (127.0.0.1:<port> in tests) matches.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import yaml
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPEC_PATH: Final = Path(__file__).resolve().parents[1] / "openapi.yaml"
REPORT_WEBHOOK: Final = "deliveryReport"


def _yaml_loads(value: bytes, **parameters: str) -> Any:
    return yaml.safe_load(value)


@functools.cache
def spec() -> OpenAPI:
    """openapi.yaml, loaded (and checked by openapi-spec-validator) once per process."""
    config = Config(extra_media_type_deserializers={"application/yaml": _yaml_loads})
    return OpenAPI.from_file_path(str(SPEC_PATH), config=config)


def _headers(given: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> Headers:
    """Case-insensitive headers from a dict, an httpx/starlette Headers or (name, value) pairs."""
    if given is None:
        return Headers()
    items = given.items() if isinstance(given, Mapping) else given
    # multi_items() keeps repeated headers where the mapping offers it
    multi = getattr(given, "multi_items", None)
    if callable(multi):
        items = multi()
    return Headers([(str(k), str(v)) for k, v in items])


def _content_type(headers: Headers) -> str:
    return (headers.get("content-type") or "").lower()


@dataclass
class _Request:
    """openapi_core.protocols.Request over a plain exchange."""

    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters = field(default_factory=RequestParameters)


@dataclass
class _WebhookRequest:
    """openapi_core.protocols.WebhookRequest."""

    name: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters = field(default_factory=RequestParameters)


@dataclass
class _Response:
    """openapi_core.protocols.Response."""

    status_code: int
    headers: Headers
    data: bytes | None
    content_type: str


def _explain(errors: Iterable[BaseException]) -> list[str]:
    """Every error with its causes, and the JSON-schema errors beneath them, one per line."""
    lines: list[str] = []

    def walk(exc: BaseException, depth: int) -> None:
        indent = "  " * depth
        schema_errors = getattr(exc, "schema_errors", None) or ()
        if schema_errors:
            # The exception's own text repeats the whole value: the schema errors say more.
            lines.append(f"{indent}- {type(exc).__name__}:")
            for schema_error in schema_errors:
                where = "/".join(str(p) for p in schema_error.absolute_path) or "(root)"
                lines.append(f"{indent}    at {where}: {_clip(schema_error.message, 300)}")
            return
        lines.append(f"{indent}- {type(exc).__name__}: {_clip(str(exc), 200)}")
        cause = exc.__cause__
        if cause is not None and depth < 5 and not isinstance(cause, KeyError):
            walk(cause, depth + 1)

    for error in errors:
        walk(error, 0)
    return lines


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _preview(body: bytes | None, limit: int = 600) -> str:
    if not body:
        return "(empty)"
    return _clip(body.decode("utf-8", "replace"), limit)


def assert_conforms(method: str, url: str, request_headers: Mapping[str, str],
                    request_body: bytes | None, status: int,
                    response_headers: Mapping[str, str], response_body: bytes) -> None:
    """Raise AssertionError unless this exchange is one openapi.yaml documents.

    `url` is the absolute URL called (query string included). Header mappings may be dicts,
    httpx.Headers or starlette Headers; names are matched case-insensitively.
    """
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"assert_conforms needs an absolute URL, got {url!r}")
    req_headers = _headers(request_headers)
    request = _Request(
        host_url=f"{parts.scheme}://{parts.netloc}",
        path=parts.path or "/",
        method=method.lower(),
        body=request_body,
        content_type=_content_type(req_headers),
        parameters=RequestParameters(
            query=ImmutableMultiDict(parse_qsl(parts.query, keep_blank_values=True)),
            header=req_headers,
        ),
    )
    resp_headers = _headers(response_headers)
    response = _Response(status_code=status, headers=resp_headers, data=response_body,
                         content_type=_content_type(resp_headers))
    openapi = spec()
    problems: list[str] = []
    response_errors = list(openapi.iter_response_errors(request, response))
    if response_errors:
        problems.append(f"response {status} does not conform:")
        problems.extend(_explain(response_errors))
    unrouted = any(isinstance(e, (PathNotFound, OperationNotFound)) for e in response_errors)
    if 200 <= status < 300 and not unrouted:
        request_errors = list(openapi.iter_request_errors(request))
        if request_errors:
            problems.append(f"the app answered {status} to a request the spec does not allow:")
            problems.extend(_explain(request_errors))
    if problems:
        raise AssertionError(
            f"{method.upper()} {url} -> {status} breaks openapi.yaml\n"
            + "\n".join(problems)
            + f"\nrequest body: {_preview(request_body)}"
            + f"\nresponse headers: {dict(resp_headers.items())}"
            + f"\nresponse body: {_preview(response_body)}"
        )


def assert_report_conforms(request_headers: Mapping[str, str], request_body: bytes,
                           webhook: str = REPORT_WEBHOOK) -> None:
    """Raise AssertionError unless a POST the connector made matches webhooks.<webhook>
    (deliveryReport by default; inboundMessage for forwarded inbound messages)."""
    headers = _headers(request_headers)
    request = _WebhookRequest(
        name=webhook, method="post", body=request_body,
        content_type=_content_type(headers),
        parameters=RequestParameters(header=headers),
    )
    errors = list(spec().iter_request_errors(request))
    if errors:
        raise AssertionError(
            f"POST breaks openapi.yaml webhooks.{webhook}\n"
            + "\n".join(_explain(errors))
            + f"\nbody: {_preview(request_body)}"
        )
