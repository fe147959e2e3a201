"""One convention for time: timezone-aware UTC everywhere in Python."""

from collections.abc import Callable
from datetime import UTC
from datetime import datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def isoformat(value: datetime | None) -> str | None:
    """Render an aware datetime as ISO 8601 with its ``+00:00`` offset."""
    return None if value is None else as_utc(value).isoformat()
