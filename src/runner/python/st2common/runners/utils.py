"""``st2common.runners.utils``: the logger and instantiation helpers of Python actions (packd shim).

An action's ``self.logger`` is ``actions.python.<ClassName>`` writing to stderr with StackStorm's
format, so log lines end up in the execution's ``stderr``.
"""

import logging
import sys

__all__ = ["get_logger_for_python_runner_action", "get_action_class_instance"]

LOG_FORMAT = "%(name)-12s: %(levelname)-8s %(message)s"

_LOGGERS = {}


def _level(log_level):
    name = str(log_level or "debug").upper()
    if name == "AUDIT":
        return logging.CRITICAL + 10
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.DEBUG


def get_logger_for_python_runner_action(action_name, log_level="debug"):
    """The stderr logger of one action class, created once per process."""
    logger_name = "actions.python.%s" % (action_name,)
    logger = _LOGGERS.get(logger_name)
    if logger is None:
        level = _level(log_level)
        logger = logging.getLogger(logger_name)
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(level)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
        logger.setLevel(level)
        # Our handler already writes the record; a configured root logger must not repeat it.
        logger.propagate = False
        _LOGGERS[logger_name] = logger
    return logger


def get_action_class_instance(action_cls, config=None, action_service=None):
    """Instantiate an action class; classes whose constructor lacks ``action_service`` get it
    assigned afterwards, as StackStorm does."""
    try:
        return action_cls(config=config, action_service=action_service)
    except TypeError as e:
        if "unexpected keyword argument 'action_service'" not in str(e):
            raise
    instance = action_cls(config=config)
    instance.action_service = action_service
    return instance
