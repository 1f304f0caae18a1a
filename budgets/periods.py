"""Budget periods in UTC: when the one holding a moment started and ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def period_start(period: str, at: datetime) -> datetime:
    if period == "total":
        return EPOCH
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def period_end(period: str, start: datetime) -> datetime | None:
    if period == "total":
        return None
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


def period_label(period: str, start: datetime) -> str:
    """The counter's name for the period: it changes when the period rolls over."""
    return "total" if period == "total" else start.strftime("%Y%m%d")
