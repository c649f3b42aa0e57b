"""``st2common.exceptions.action``: action exceptions pack code raises (packd shim)."""

from st2common.exceptions import StackStormBaseException

__all__ = [
    "ParameterRenderingFailedException",
    "InvalidActionReferencedException",
    "InvalidActionParameterException",
]


class ParameterRenderingFailedException(StackStormBaseException):
    pass


class InvalidActionReferencedException(StackStormBaseException):
    pass


class InvalidActionParameterException(StackStormBaseException):
    pass
