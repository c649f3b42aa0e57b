"""``st2reactor.sensor.base``: the ``Sensor`` and ``PollingSensor`` base classes (packd shim).

Packs use both attribute spellings (``self.sensor_service`` / ``self._sensor_service``,
``self.config`` / ``self._config``), so both are set. The process that drives a sensor (calls
``setup()``, ``run()``, the trigger callbacks and ``cleanup()``) is packd's sensor wrapper.
"""

import abc
import time

__all__ = ["BaseSensor", "Sensor", "PollingSensor"]

# StackStorm's default poll interval, in seconds.
DEFAULT_POLL_INTERVAL = 5


class BaseSensor(metaclass=abc.ABCMeta):
    def __init__(self, sensor_service, config=None):
        self._sensor_service = sensor_service
        self.sensor_service = sensor_service
        self._config = config or {}
        self.config = self._config

    @abc.abstractmethod
    def setup(self):
        """Run once before ``run()``."""

    @abc.abstractmethod
    def run(self):
        """Run the sensor; for a passive sensor this blocks for the life of the process."""

    @abc.abstractmethod
    def cleanup(self):
        """Run once when the sensor stops."""

    @abc.abstractmethod
    def add_trigger(self, trigger):
        """A trigger of one of this sensor's types was created."""

    @abc.abstractmethod
    def update_trigger(self, trigger):
        """A trigger of one of this sensor's types was changed."""

    @abc.abstractmethod
    def remove_trigger(self, trigger):
        """A trigger of one of this sensor's types was deleted."""


class Sensor(BaseSensor):
    """A passive sensor: ``run()`` runs its own loop or server."""

    @abc.abstractmethod
    def run(self):
        pass


class PollingSensor(BaseSensor):
    """A sensor whose ``poll()`` is called every ``poll_interval`` seconds."""

    def __init__(self, sensor_service, config=None, poll_interval=DEFAULT_POLL_INTERVAL):
        super().__init__(sensor_service=sensor_service, config=config)
        if poll_interval is None:
            poll_interval = DEFAULT_POLL_INTERVAL
        self._poll_interval = poll_interval

    @abc.abstractmethod
    def poll(self):
        """One poll: look for new events and dispatch them."""

    def run(self):
        while True:
            self.poll()
            self._sleep(self._poll_interval)

    def _sleep(self, seconds):
        time.sleep(seconds)

    def get_poll_interval(self):
        return self._poll_interval

    def set_poll_interval(self, poll_interval):
        self._poll_interval = poll_interval
