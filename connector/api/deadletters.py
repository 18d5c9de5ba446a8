"""Operator endpoints for dead letters: list them, and queue them for delivery again."""

from __future__ import annotations

import datetime
import time
from typing import Annotated, Any, Final

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response

from connector import metrics
from connector.api.operator import (
    _UNAUTHORIZED,
    DEFAULT_PAGE,
    MAX_PAGE,
    _json,
    _operator_error,
    _whole,
    authorized,
)
from connector.api.send import read_body
from connector.errors import BadRequest
from connector.outbox import rfc3339
from connector.services import Services
from connector.store.base import DeadLetter, DeadLetterFilter
from connector.store.deadletters import MAX_IDS, url_host

log = structlog.get_logger("connector.operator")
MAX_CURSOR: Final = 2**62
OutboxId = Annotated[int, msgspec.Meta(ge=1, le=MAX_CURSOR)]


class ReplayBody(msgspec.Struct, forbid_unknown_fields=True):
    ids: list[OutboxId] | None = None
    host: str | None = None
    since: str | None = None
    until: str | None = None
    all: bool = False


_decode_replay = msgspec.json.Decoder(ReplayBody)


def parse_time(raw: str, name: str) -> float:
    """An RFC 3339 moment with its offset (e.g. 2026-12-03T10:00:00Z) as Unix seconds."""
    try:
        moment = datetime.datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an RFC 3339 time such as 2026-12-03T10:00:00Z",
                         code="invalid_field") from None
    if moment.tzinfo is None:
        raise BadRequest(f"{name} needs a UTC offset (Z or +hh:mm)", code="invalid_field")
    return moment.timestamp()


def dead_filter(host: str | None, since: str | None, until: str | None) -> DeadLetterFilter:
    """The filter from an operator's words; BadRequest names what is wrong."""
    if host is not None:
        host = host.strip().lower().strip("[]")
        if not host or any(c in host for c in "/?#@ ") or not host.isprintable():
            raise BadRequest("host must be a bare host name, as in the callback URL",
                             code="invalid_field")
    which = DeadLetterFilter(host=host,
                             since=None if not since else parse_time(since, "since"),
                             until=None if not until else parse_time(until, "until"))
    if which.since is not None and which.until is not None and which.since >= which.until:
        raise BadRequest("since must be before until", code="invalid_field")
    return which


def filter_given(which: DeadLetterFilter) -> bool:
    return which != DeadLetterFilter()


async def list_dead(request: Request) -> Response:
    """GET: dead letters, oldest first, a page at a time (cursor `after`: the last id seen)."""
    services: Services = request.app.state.services
    if not authorized(services, request):
        return _operator_error(*_UNAUTHORIZED)
    query = request.query_params
    try:
        limit = _whole(query.get("limit"), DEFAULT_PAGE, "limit", 1, MAX_PAGE)
        after = _whole(query.get("after"), 0, "after", 0, MAX_CURSOR)
    except ValueError as exc:
        raise BadRequest(str(exc), code="invalid_field") from None
    which = dead_filter(query.get("host") or None, query.get("since"), query.get("until"))
    found = await services.store.dead_letters(which, after, limit)
    # A cursor rather than an offset: replays take rows out of the list between pages.
    return _json({"dead_letters": [_view(d) for d in found], "limit": limit,
                  "next_after": found[-1].id if len(found) == limit else None})


def _view(dead: DeadLetter) -> dict[str, Any]:
    # The host only: a callback URL's path or query may carry the platform's secrets.
    return {"id": dead.id, "event_id": dead.event_id, "message_id": dead.message_id,
            "url_host": url_host(dead.url), "created_at": rfc3339(dead.created_at),
            "dead_at": rfc3339(dead.dead_at), "attempts": dead.attempts,
            "last_error": dead.last_error}


async def replay(request: Request) -> Response:
    """POST: queue dead letters again, by ids, by filter (both: ids that match it), or all."""
    services: Services = request.app.state.services
    if not authorized(services, request):
        return _operator_error(*_UNAUTHORIZED)
    raw = await read_body(request, services.settings.max_body_bytes)
    try:
        body = _decode_replay.decode(raw)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid body: {exc}", code="invalid_field") from None
    except msgspec.DecodeError:
        raise BadRequest("body is not valid JSON", code="malformed_json") from None
    which = dead_filter(body.host, body.since, body.until)
    if body.ids is not None and not 1 <= len(body.ids) <= MAX_IDS:
        raise BadRequest(f"ids must list 1 to {MAX_IDS} ids", code="invalid_field")
    if body.ids is None and not filter_given(which) and not body.all:
        raise BadRequest("give ids, a filter (host, since, until) or all: true",
                         code="invalid_field")
    count = await replay_now(services, which, body.ids)
    services.dispatcher.wake()
    return _json({"replayed": count})


async def replay_now(services: Services, which: DeadLetterFilter,
                     ids: list[int] | None) -> int:
    """Replay in the store and count it (the API and `connector replay` both come here)."""
    count = await services.store.replay_dead(which, ids, time.time())
    metrics.REPLAYS.inc(count)
    log.info("dead_letters_replayed", count=count, host=which.host, ids=len(ids or ()))
    return count
