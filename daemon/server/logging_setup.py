"""Logging for eportd: JSON lines (or plain text) on stderr, set up once by main().

journald and log shippers read one JSON object per line; `--log-format text` is for people
watching a terminal. PINs never reach a log call, so there is deliberately no redaction filter
here: a filter would only hide the bug that logged one.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# Same value as eport.cardlib.pcsc.transport.TRAFFIC. Importing it from there would import
# pyscard, which only the transport may do.
TRAFFIC = 5
PCSC_LOGGER = "eport.cardlib.pcsc.transport"
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("TRAFFIC", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

logging.addLevelName(TRAFFIC, "TRAFFIC")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, then the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def parse_level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}; levels: {', '.join(LOG_LEVELS)}")
    return value


def configure_logging(level: str | int = "INFO", *, json_format: bool = True,
                      apdu_trace: bool = False, stream: TextIO | None = None
                      ) -> logging.Handler:
    """Send the root logger to `stream` (stderr); calling it again replaces our handler.

    `apdu_trace` lets the PC/SC transport's TRAFFIC records (every APDU) through whatever the
    root level is.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter(_TEXT_FORMAT))
    handler.set_name("eportd")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "eportd":
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(parse_level(level))
    # NOTSET, not TRAFFIC, when off: the transport logger then follows the root level.
    logging.getLogger(PCSC_LOGGER).setLevel(TRAFFIC if apdu_trace else logging.NOTSET)
    return handler
