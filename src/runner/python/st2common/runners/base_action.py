"""``st2common.runners.base_action``: the ``Action`` base class of Python actions (packd shim).

``self.config`` is the pack config as a dict whose missing keys raise a ``ValueError`` naming the
pack and the key (StackStorm's ``PackConfigDict``); ``self.logger`` writes to stderr;
``self.action_service`` is the datastore access object the wrapper passes in.
"""

import abc
import os

from st2common.runners.utils import get_logger_for_python_runner_action

__all__ = ["Action", "PackConfigDict"]


class PackConfigDict(dict):
    """A pack config: ``config["missing"]`` explains what is missing instead of a bare KeyError."""

    def __init__(self, pack_name, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pack_name = pack_name

    def __getitem__(self, key):
        try:
            return super().__getitem__(key)
        except KeyError:
            raise ValueError(
                'Config for pack "%s" is missing key "%s". Make sure that the config file '
                "exists (configs/%s.yaml) and that it contains this key, or that the key has a "
                "default value in config.schema.yaml." % (self._pack_name, key, self._pack_name)
            ) from None


class Action(metaclass=abc.ABCMeta):
    """Base class for Python actions: implement ``run(self, **parameters)``."""

    description = None

    def __init__(self, config=None, action_service=None):
        pack_name = (
            getattr(action_service, "pack_name", None)
            or os.environ.get("ST2_ACTION_PACK_NAME")
            or "unknown"
        )
        self.config = PackConfigDict(pack_name, config or {})
        self.action_service = action_service
        log_level = getattr(action_service, "log_level", None) or "debug"
        self.logger = get_logger_for_python_runner_action(
            action_name=self.__class__.__name__, log_level=log_level
        )

    @abc.abstractmethod
    def run(self, **kwargs):
        raise NotImplementedError

    def get_user_info(self):
        """Who runs the action (``{"username": ...}``)."""
        if self.action_service is None:
            return None
        return self.action_service.get_user_info()

    def _get_logger(self):
        return self.logger
