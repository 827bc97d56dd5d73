"""Dates for card validity on the command line: ISO dates or offsets from now."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_OFFSET = re.compile(r"^([+-]?)(\d+)([dhm])$")


def parse_moment(text: str, *, now: datetime | None = None) -> datetime:
    """'now', '+30d' / '-400d' / '2h', '2025-01-31' or '2025-01-31T08:00:00' (UTC if no zone)."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text == "now":
        return now.replace(microsecond=0)
    match = _OFFSET.match(text)
    if match:
        sign, amount, unit = match.groups()
        delta = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}[unit]
        moment = now + (-1 if sign == "-" else 1) * int(amount) * delta
        return moment.replace(microsecond=0)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date: use now, +30d, -400d, 2025-01-31 or 2025-01-31T08:00:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
