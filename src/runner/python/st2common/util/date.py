"""``st2common.util.date``: timezone-aware datetime helpers (packd shim).

StackStorm uses dateutil; this shim uses only the standard library, which covers the ISO 8601
forms StackStorm itself produces and accepts.
"""

import datetime

__all__ = [
    "get_datetime_utc_now",
    "append_milliseconds_to_time",
    "add_utc_tz",
    "convert_to_utc",
    "parse",
]


def get_datetime_utc_now():
    """The current time as an aware UTC datetime."""
    return datetime.datetime.now(datetime.timezone.utc)


def append_milliseconds_to_time(date, millis):
    """``date`` plus ``millis`` milliseconds."""
    return date + datetime.timedelta(milliseconds=millis)


def add_utc_tz(dt):
    """Mark a naive datetime as UTC; an aware one must already be UTC."""
    if dt.tzinfo and dt.tzinfo.utcoffset(dt) != datetime.timedelta(0):
        raise ValueError("datetime already contains a non UTC timezone")
    return dt.replace(tzinfo=datetime.timezone.utc)


def convert_to_utc(dt):
    """Convert to aware UTC; a naive datetime is taken to be UTC already."""
    if not dt.tzinfo:
        return add_utc_tz(dt)
    return dt.astimezone(datetime.timezone.utc)


def parse(value, preserve_original_tz=False):
    """Parse an ISO 8601 string into an aware datetime (UTC unless ``preserve_original_tz``)."""
    text = str(value).strip()
    if len(text) > 10 and text[10] == " ":
        text = text[:10] + "T" + text[11:]
    dt = datetime.datetime.fromisoformat(text)
    if not dt.tzinfo:
        dt = add_utc_tz(dt)
    if not preserve_original_tz:
        dt = convert_to_utc(dt)
    return dt
