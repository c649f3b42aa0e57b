"""``st2common.util.isotime``: ISO 8601 formatting and parsing as StackStorm does it (packd shim).

``format(dt)`` gives ``2024-05-01T12:00:00.000000+00:00``; ``parse`` accepts the UTC forms
StackStorm validates (``Z``, ``+00``, ``+0000``, ``+00:00``, optional 3-6 fraction digits, ``T``
or a space between date and time) and returns an aware UTC datetime.
"""

import datetime
import re

from st2common.util.date import add_utc_tz, convert_to_utc, get_datetime_utc_now

__all__ = ["format", "validate", "parse", "add_utc_tz", "get_datetime_utc_now"]

ISO8601_FORMAT = "%Y-%m-%dT%H:%M:%S"
ISO8601_FORMAT_MICROSECOND = "%Y-%m-%dT%H:%M:%S.%f"
ISO8601_UTC_REGEX = (
    r"^\d{4}\-\d{2}\-\d{2}(\s|T)\d{2}:\d{2}:\d{2}(\.\d{3,6})?(Z|\+00|\+0000|\+00:00)$"
)


def format(dt, usec=True, offset=True):  # noqa: A001 - the StackStorm name
    """Format a datetime (or an ISO string, parsed first) as ISO 8601."""
    if isinstance(dt, str):
        dt = parse(dt)
    fmt = ISO8601_FORMAT_MICROSECOND if usec else ISO8601_FORMAT
    if offset:
        ost = dt.strftime("%z")
        ost = (ost[:3] + ":" + ost[3:]) if ost else "+00:00"
    else:
        tz = dt.tzinfo.tzname(dt) if dt.tzinfo else "UTC"
        ost = "Z" if tz == "UTC" else tz
    return dt.strftime(fmt) + ost


def validate(value, raise_exception=True):
    """True if ``value`` is a datetime or a UTC ISO 8601 string."""
    if isinstance(value, datetime.datetime) or (
        isinstance(value, str) and re.match(ISO8601_UTC_REGEX, value)
    ):
        return True
    if raise_exception:
        raise ValueError("Datetime value does not match expected format.")
    return False


def _normalise(text):
    text = text.strip()
    if len(text) > 10 and text[10] == " ":
        text = text[:10] + "T" + text[11:]
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif text.endswith("+0000"):
        text = text[:-5] + "+00:00"
    elif text.endswith("+00"):
        text = text + ":00"
    # fromisoformat before 3.11 wants exactly 3 or 6 fraction digits; pad 4-5 to 6.
    match = re.search(r"\.(\d+)(?=[+-]\d{2}:\d{2}$|$)", text)
    if match and len(match.group(1)) not in (3, 6):
        digits = (match.group(1) + "000000")[:6]
        text = text[: match.start(1)] + digits + text[match.end(1):]
    return text


def parse(value, preserve_original_tz=False, validate_value=True):
    """Parse an ISO 8601 string (or pass a datetime through) into an aware datetime."""
    if validate_value:
        validate(value, raise_exception=True)
    if isinstance(value, datetime.datetime):
        dt = value
    else:
        dt = datetime.datetime.fromisoformat(_normalise(str(value)))
    if not dt.tzinfo:
        dt = add_utc_tz(dt)
    if not preserve_original_tz:
        dt = convert_to_utc(dt)
    return dt
