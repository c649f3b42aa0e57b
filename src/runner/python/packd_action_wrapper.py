"""packd's python-script action wrapper: StackStorm's ``python_action_wrapper.py`` contract.

    python -u packd_action_wrapper.py --pack=<pack> --file-path=<abs .py> [--stdin-parameters]
        [--parameters=<json>] [--config=<json>] [--log-level=<level>]

With ``--stdin-parameters`` one line ``{"parameters": {...}, "config": {...}}`` is read from stdin
(packd always uses it: argv is visible to every local user, and both may carry secrets).

The first class (alphabetically) defined in the file that has a ``run`` method is instantiated
with ``config`` and ``action_service`` and ``run(**parameters)`` is called. Its return value is
printed to stdout between two delimiters as ``{"result": ..., "status": ...}``; a ``(bool, data)``
tuple sets ``status``. A 2-tuple whose first item is not a bool exits 220. Uncaught exceptions
print a traceback to stderr and exit 1.
"""

import argparse
import inspect
import json
import os
import select
import sys

from packd_client import DatastoreDelegation, DatastoreService, import_file
from st2common.runners.base_action import Action
from st2common.runners.utils import get_action_class_instance
from st2common.runners.utils import get_logger_for_python_runner_action

DELIMITER = "%%%%%~=~=~=************=~=~=~%%%%"
INVALID_STATUS_EXIT_CODE = 220
# Seconds to wait for the parameter line on stdin; the agent writes it right after the spawn.
STDIN_TIMEOUT = 10

INVALID_STATUS_ERROR_MESSAGE = """
If this is an existing action which returns a tuple with two items, it needs to be updated to
either:

1. Return a list instead of a tuple
2. Return a tuple where a first items is a status flag - (True, ('item1', 'item2'))
""".strip()


class ActionService(DatastoreDelegation):
    """What ``self.action_service`` offers an action: datastore access under its local prefix."""

    def __init__(self, pack_name, class_name, log_level):
        self.pack_name = pack_name
        self.class_name = class_name
        self.log_level = log_level
        self._datastore_service = None

    @property
    def datastore_service(self):
        if self._datastore_service is None:
            logger = get_logger_for_python_runner_action(self.class_name, self.log_level)
            self._datastore_service = DatastoreService(
                logger=logger, pack_name=self.pack_name, class_name=self.class_name
            )
        return self._datastore_service



def load_action_class(file_path):
    """Import ``file_path`` and return its action class."""
    file_path = os.path.abspath(file_path)
    if not os.path.isfile(file_path):
        raise Exception('File "%s" has no action class or the file doesn\'t exist.' % file_path)
    try:
        module = import_file(file_path, "action")
    except Exception:
        sys.stderr.write(
            'Failed to load action class from file "%s" (action file most likely contains '
            "invalid syntax or fails to import):\n" % file_path
        )
        raise
    candidates = [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__
        and cls is not Action
        and callable(getattr(cls, "run", None))
    ]
    if not candidates:
        raise Exception('File "%s" has no action class or the file doesn\'t exist.' % file_path)
    return candidates[0]


def read_stdin_document():
    ready, _, _ = select.select([sys.stdin], [], [], STDIN_TIMEOUT)
    if not ready:
        raise ValueError("No input received and timed out while waiting for parameters from stdin")
    line = sys.stdin.readline()
    try:
        document = json.loads(line)
    except ValueError as e:
        raise ValueError(
            "Failed to parse parameters from stdin. Expected a JSON object with "
            '"parameters" attribute: %s' % (e,)
        )
    if not isinstance(document, dict):
        raise ValueError('Expected a JSON object with "parameters" attribute on stdin')
    return document


def encode_output(result, status):
    try:
        return json.dumps({"result": result, "status": status}, allow_nan=False)
    except (TypeError, ValueError):
        # Not JSON-serializable (a class instance, NaN, a cycle): StackStorm stores str(result).
        return json.dumps({"result": str(result), "status": status})


def main(argv=None):
    parser = argparse.ArgumentParser(description="packd python action wrapper")
    parser.add_argument("--pack", required=True)
    parser.add_argument("--file-path", required=True)
    parser.add_argument("--config", required=False)
    parser.add_argument("--parameters", required=False)
    parser.add_argument("--stdin-parameters", action="store_true")
    parser.add_argument("--user", required=False)
    parser.add_argument("--parent-args", required=False)
    parser.add_argument("--log-level", required=False, default="DEBUG")
    args = parser.parse_args(argv)

    config = json.loads(args.config) if args.config else {}
    parameters = {}
    if args.parameters:
        parameters.update(json.loads(args.parameters) or {})
    if args.stdin_parameters:
        document = read_stdin_document()
        parameters.update(document.get("parameters") or {})
        if document.get("config") is not None:
            config = document["config"]
    if not isinstance(config, dict):
        raise ValueError("Pack config needs to be a dictionary")
    if not isinstance(parameters, dict):
        raise ValueError("Action parameters need to be a dictionary")

    action_cls = load_action_class(args.file_path)
    service = ActionService(args.pack, action_cls.__name__, args.log_level)
    action = get_action_class_instance(action_cls, config=config, action_service=service)
    output = action.run(**parameters)

    if isinstance(output, tuple) and len(output) == 2:
        status, result = output
    else:
        status, result = None, output
    if status is not None and not isinstance(status, bool):
        sys.stderr.write(
            "Status returned from the action run() method must either be True or False, "
            "got: %s\n" % (status,)
        )
        sys.stderr.write(INVALID_STATUS_ERROR_MESSAGE + "\n")
        sys.stderr.flush()
        return INVALID_STATUS_EXIT_CODE

    body = encode_output(result, status)
    sys.stdout.flush()
    # The action may have replaced sys.stdout; the framed result must reach the real stdout.
    out = sys.__stdout__ or sys.stdout
    out.write(DELIMITER + body + "\n" + DELIMITER)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
