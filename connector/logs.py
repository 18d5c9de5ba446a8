"""structlog set-up: JSON lines (pretty on a TTY), context bound per request, numbers masked."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final

import structlog

from connector.msisdn import mask

# Any run of 7+ digits that may stand behind 00 or + is a phone number until proven otherwise.
_NUMBER: Final = re.compile(r"(?<![\w.])(?:\+|00)?[1-9][0-9]{6,14}(?![\w.])")
_SECRET_KEYS: Final = re.compile(r"token|secret|password|authorization|api[-_]?key|auth", re.IGNORECASE)
_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                  "error": logging.ERROR}
# Whether configure() let info lines through (True until it says otherwise). The lines every
# message writes test it first: a dropped line then costs neither its fields nor the three
# Python calls structlog's lazy logger makes to drop it (#11).
info_enabled = True


def mask_numbers(text: str) -> str:
    return _NUMBER.sub(lambda m: mask(m.group(0)), text)


def _scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask phone numbers in every string value, and drop values under secret-looking keys."""
    for key, value in list(event.items()):
        if _SECRET_KEYS.search(key) and key != "event":
            event[key] = "***"
        elif isinstance(value, str):
            event[key] = mask_numbers(value)
    return event


class _Stderr:
    """sys.stderr as it is when a line is written, not when logging was configured: whoever
    replaces it later (a test's capture, a daemon's redirection) gets the lines, and a closed
    stream left behind never does."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "info", fmt: str = "auto") -> None:
    global info_enabled
    info_enabled = _LEVELS[level] <= logging.INFO
    renderer: Any
    if fmt == "console" or (fmt == "auto" and sys.stderr.isatty()):
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
