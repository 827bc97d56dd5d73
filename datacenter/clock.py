"""Time as the data centre keeps it: integer microseconds (UTC) in the store, China time
(UTC+8, no daylight saving) for calendar dates and number years."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from google.protobuf import timestamp_pb2

CHINA_TIME = timezone(timedelta(hours=8), "UTC+8")


def now() -> datetime:
    return datetime.now(UTC)


def to_micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def from_micros(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000, UTC)


def china_date(moment: datetime) -> str:
    """YYYY-MM-DD of the moment in China."""
    return moment.astimezone(CHINA_TIME).date().isoformat()


def china_year(moment: datetime) -> int:
    return moment.astimezone(CHINA_TIME).year


def parse_date(text: str) -> date:
    """A YYYY-MM-DD date; ValueError otherwise."""
    if len(text) != 10:
        raise ValueError("dates are YYYY-MM-DD")
    return date.fromisoformat(text)


def timestamp(value: int | None) -> timestamp_pb2.Timestamp | None:
    """A protobuf Timestamp of stored microseconds (None stays None: the field stays unset)."""
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(value)
    return stamp
