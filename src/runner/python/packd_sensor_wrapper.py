"""packd's StackStorm sensor wrapper: runs one unmodified ``st2reactor`` sensor class.

    python -u packd_sensor_wrapper.py --pack=<pack> --file-path=<abs .py> --class-name=<Class>
        [--poll-interval=<seconds>] [--log-level=<level>]

The agent's side of the contract (``src/sensor`` in packd):

* **stdin**: one line ``{"config": {...}, "triggers": [<trigger dict>, ...]}``, then EOF (the
  agent closes it). Trigger dicts are StackStorm's ``{id, ref, uid, name, pack, type,
  parameters}``; ``add_trigger`` is called once for each, after ``setup()``. Runtime trigger
  changes are made by restarting the sensor, never over this pipe.
* **stdout is the event channel and nothing else**: one JSON object per line,
  ``{"trigger": <ref>, "payload": {...}, "trace_tag": <str or null>}`` — the same protocol as
  any-language (Attune) sensors. The wrapper keeps a private duplicate of fd 1 and then points
  fd 1 at stderr, so ``print()`` in the sensor, and any process it starts, lands in the log and
  can never corrupt the channel.
* **stderr**: the log, one ``LEVEL logger: message`` per line (tracebacks follow unprefixed).
* **datastore**: ``packd_client`` over the agent's Unix socket (``PACKD_SOCKET``); ``local=True``
  names get the ``<pack>.<Class>:`` prefix exactly as StackStorm does.
* **stop**: SIGTERM → ``cleanup()`` → exit 0. ``run()`` raising → traceback, exit 1; a load
  error (missing file or class, syntax error) → a one-paragraph reason on stderr, exit 1.

``import eventlet`` works: the real one (in the pack's virtualenv) wins; otherwise a small
stand-in (``packd_fallback/eventlet``, last on ``sys.path``) is used.
"""

import argparse
import atexit
import inspect
import json
import logging
import os
import select
import signal
import sys
import threading

from packd_client import DatastoreDelegation, import_file

# Seconds to wait for the configuration line on stdin; the agent writes it right after the spawn.
STDIN_TIMEOUT = 10
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
FALLBACK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "packd_fallback")

LOG = logging.getLogger("packd.sensor_wrapper")


class LoadError(Exception):
    """The sensor could not be loaded; the message says why, for the operator."""


class EventChannel(object):
    """The private copy of the original stdout: one JSON event per line, whole lines only."""

    def __init__(self, fd):
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._lock = threading.Lock()

    def send(self, document):
        # default=str: StackStorm pickles payloads, so datetimes and the like reach the rules
        # engine; over JSON their string form is the closest equivalent.
        line = (json.dumps(document, default=str, allow_nan=False) + "\n").encode("utf-8")
        with self._lock:
            view = memoryview(line)
            while view:
                written = self._file.write(view)
                view = view[written:]


def trigger_ref(trigger):
    """A trigger given to ``dispatch``: a ref string, or a trigger dict from ``add_trigger``."""
    if isinstance(trigger, dict):
        ref = trigger.get("ref") or trigger.get("type")
        if not isinstance(ref, str) or not ref:
            raise ValueError("trigger dict has neither a 'ref' nor a 'type': %r" % (trigger,))
        return ref
    if isinstance(trigger, str) and trigger:
        return trigger
    raise ValueError("trigger must be a trigger ref string or a trigger dict, got %r" % (trigger,))


class SensorService(DatastoreDelegation):
    """``self.sensor_service`` / ``self._sensor_service`` of a sensor."""

    def __init__(self, pack_name, class_name, channel):
        self._pack_name = pack_name
        self._class_name = class_name
        self._channel = channel
        self._datastore_service = None
        self._logger = self.get_logger("sensor_service")

    @property
    def datastore_service(self):
        if self._datastore_service is None:
            from packd_client import DatastoreService

            self._datastore_service = DatastoreService(
                logger=self._logger, pack_name=self._pack_name, class_name=self._class_name
            )
        return self._datastore_service

    def get_logger(self, name):
        return logging.getLogger(
            "SensorWrapper.%s.%s.%s" % (self._pack_name, self._class_name, name)
        )

    def dispatch(self, trigger, payload=None, trace_tag=None):
        self._send(trigger, payload, trace_tag)

    def dispatch_with_context(self, trigger, payload=None, trace_context=None):
        if isinstance(trace_context, dict):
            trace_tag = trace_context.get("trace_tag")
        else:
            trace_tag = getattr(trace_context, "trace_tag", None)
        self._send(trigger, payload, trace_tag)

    def _send(self, trigger, payload, trace_tag):
        # StackStorm logs and drops a trigger it cannot dispatch; it never raises into the sensor.
        try:
            document = {
                "trigger": trigger_ref(trigger),
                "payload": {} if payload is None else payload,
                "trace_tag": None if trace_tag is None else str(trace_tag),
            }
            self._channel.send(document)
        except (TypeError, ValueError) as e:
            self._logger.warning("Dropped a trigger that cannot be dispatched: %s", e)



def take_stdout():
    """Keep fd 1 (the event channel) for the wrapper; make everything else write to stderr."""
    channel_fd = os.dup(1)  # not inherited by child processes (Python's default for new fds)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return EventChannel(channel_fd)


def read_stdin_document():
    ready, _, _ = select.select([sys.stdin], [], [], STDIN_TIMEOUT)
    if not ready:
        raise LoadError("no configuration received on stdin within %d s" % STDIN_TIMEOUT)
    line = sys.stdin.readline()
    if not line.strip():
        return {}
    try:
        document = json.loads(line)
    except ValueError as e:
        raise LoadError("the configuration line on stdin is not valid JSON: %s" % (e,))
    if not isinstance(document, dict):
        raise LoadError("the configuration line on stdin is not a JSON object")
    return document


def load_sensor_class(file_path, class_name):
    file_path = os.path.abspath(file_path)
    if not os.path.isfile(file_path):
        raise LoadError('Sensor file "%s" does not exist.' % file_path)
    try:
        # The fallback eventlet goes last of all, after the virtualenv's site-packages: a real
        # eventlet always wins.
        module = import_file(file_path, "sensor", after=[FALLBACK_DIR])
    except Exception:
        LOG.exception(
            'Failed to load sensor class from file "%s" (sensor file most likely contains '
            "invalid syntax or fails to import)",
            file_path,
        )
        raise LoadError('Cannot import "%s"; see the traceback above.' % file_path)
    cls = getattr(module, class_name, None)
    if not inspect.isclass(cls):
        found = sorted(
            name
            for name, value in inspect.getmembers(module, inspect.isclass)
            if value.__module__ == module.__name__
        )
        raise LoadError(
            'Sensor class "%s" not found in file "%s" (classes defined there: %s).'
            % (class_name, file_path, ", ".join(found) or "none")
        )
    return cls


def parse_poll_interval(text):
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("poll interval must not be negative")
    return int(value) if value.is_integer() else value


def main(argv=None):
    channel = take_stdout()
    parser = argparse.ArgumentParser(description="packd sensor wrapper")
    parser.add_argument("--pack", required=True)
    parser.add_argument("--file-path", required=True)
    parser.add_argument("--class-name", required=True)
    parser.add_argument("--poll-interval", type=parse_poll_interval, default=None)
    parser.add_argument(
        "--log-level", default=os.environ.get("PACKD_SENSOR_LOG_LEVEL", "INFO").upper()
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        format=LOG_FORMAT,
        level=getattr(logging, args.log_level, logging.INFO),
    )

    try:
        document = read_stdin_document()
        config = document.get("config") or {}
        triggers = document.get("triggers") or []
        if not isinstance(config, dict):
            raise LoadError("Pack config needs to be a dictionary")
        if not isinstance(triggers, list):
            raise LoadError("The active triggers need to be a list")
        sensor_cls = load_sensor_class(args.file_path, args.class_name)
        service = SensorService(args.pack, args.class_name, channel)
        kwargs = {"sensor_service": service, "config": config}
        from st2reactor.sensor.base import PollingSensor

        if args.poll_interval is not None and issubclass(sensor_cls, PollingSensor):
            kwargs["poll_interval"] = args.poll_interval
        try:
            sensor = sensor_cls(**kwargs)
        except TypeError as e:
            raise LoadError('Cannot instantiate sensor class "%s": %s' % (args.class_name, e))
    except LoadError as e:
        LOG.error("%s", e)
        return 1

    cleaned = []

    def cleanup():
        if cleaned:
            return
        cleaned.append(True)
        try:
            sensor.cleanup()
        except Exception:
            LOG.exception("cleanup() of %s raised", args.class_name)

    def on_sigterm(signum, frame):
        LOG.info("SIGTERM received, stopping %s", args.class_name)
        raise SystemExit(0)

    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, on_sigterm)

    sensor.setup()
    for trigger in triggers:
        sensor.add_trigger(trigger)
    sensor.run()
    LOG.info("run() of %s returned", args.class_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
