"""``st2common.log``: logger access as StackStorm pack code uses it (packd shim).

StackStorm prefixes logger names with ``st2.`` and adds an ``AUDIT`` level above CRITICAL; both
are kept so that log records look the same. Handlers are left to whoever configures logging (the
action wrapper logs to stderr).
"""

import logging

__all__ = ["getLogger", "AUDIT", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

AUDIT = logging.CRITICAL + 10
DEBUG = logging.DEBUG
INFO = logging.INFO
WARNING = logging.WARNING
ERROR = logging.ERROR
CRITICAL = logging.CRITICAL

logging.addLevelName(AUDIT, "AUDIT")

_PREFIX = "st2."


def getLogger(name):
    """Return the logger ``st2.<name>`` (names already starting with ``st2.`` are kept)."""
    if not name.startswith(_PREFIX):
        name = _PREFIX + name
    return logging.getLogger(name)
