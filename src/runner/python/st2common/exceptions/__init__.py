"""``st2common.exceptions``: the base exception classes pack code catches (packd shim)."""

__all__ = ["StackStormBaseException", "StackStormPluginException"]


class StackStormBaseException(Exception):
    """Base of every StackStorm exception."""


class StackStormPluginException(StackStormBaseException):
    """Base of exceptions raised by plugins (actions, sensors)."""
