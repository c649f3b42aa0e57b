"""Talk to the packd agent from Python: the datastore as ``action_service`` and
``sensor_service`` expose it.

Protocol (one Unix stream socket, path in ``PACKD_SOCKET``): one JSON object per line each way.
Requests: ``{"op": "kv.get", "name", "scope", "decrypt"}``, ``{"op": "kv.set", "name", "value",
"ttl", "secret"}``, ``{"op": "kv.delete", "name"}``, ``{"op": "kv.list", "prefix"}``. Responses:
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.

``local=True`` names are prefixed with ``<pack>.<ClassName>:`` exactly as StackStorm does, so keys
written by a pack under StackStorm keep their names here.
"""

import getpass
import json
import os
import socket
import threading

__all__ = ["AgentClient", "AgentError", "DatastoreService", "KeyValuePair", "SYSTEM_SCOPE"]

SOCKET_ENV = "PACKD_SOCKET"
SYSTEM_SCOPE = "system"
DATASTORE_KEY_SEPARATOR = ":"
# Seconds to wait for the agent's answer; a healthy agent answers in milliseconds, a wedged one
# must not hang the action until its own timeout without saying why.
REQUEST_TIMEOUT = 30.0


class AgentError(RuntimeError):
    """The agent could not be reached or refused the request."""


class AgentClient(object):
    """A line-delimited JSON connection to the agent, opened on first use."""

    def __init__(self, path=None):
        self._path = path if path is not None else os.environ.get(SOCKET_ENV)
        self._sock = None
        self._reader = None
        self._lock = threading.Lock()

    @property
    def available(self):
        return bool(self._path)

    def require(self):
        if not self._path:
            raise AgentError(
                "%s is not set: this process was not started by the packd agent, so the "
                "datastore is not available" % SOCKET_ENV
            )

    def call(self, request):
        """Send one request and return its ``result``; raises ``AgentError`` on failure."""
        self.require()
        line = (json.dumps(request) + "\n").encode("utf-8")
        with self._lock:
            try:
                response = self._exchange(line)
            except (OSError, AgentError):
                # The agent may have closed an idle connection: reconnect once. Every request
                # is idempotent, so sending it again is safe.
                self._close()
                try:
                    response = self._exchange(line)
                except OSError as e:
                    self._close()
                    raise AgentError("cannot reach the packd agent at %s: %s" % (self._path, e))
        if not isinstance(response, dict):
            raise AgentError("malformed answer from the packd agent: %r" % (response,))
        if not response.get("ok"):
            raise AgentError(response.get("error") or "the packd agent refused the request")
        return response.get("result")

    def _exchange(self, line):
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(REQUEST_TIMEOUT)
            sock.connect(self._path)
            self._sock = sock
            self._reader = sock.makefile("rb")
        self._sock.sendall(line)
        answer = self._reader.readline()
        if not answer:
            raise AgentError("the packd agent closed the connection")
        try:
            return json.loads(answer.decode("utf-8"))
        except ValueError as e:
            self._close()
            raise AgentError("malformed answer from the packd agent: %s" % (e,))

    def _close(self):
        for closable in (self._reader, self._sock):
            try:
                if closable is not None:
                    closable.close()
            except OSError:
                pass
        self._sock = None
        self._reader = None


_DEFAULT_CLIENT = None


def default_client():
    """The process-wide client for ``PACKD_SOCKET``."""
    global _DEFAULT_CLIENT
    if _DEFAULT_CLIENT is None:
        _DEFAULT_CLIENT = AgentClient()
    return _DEFAULT_CLIENT


class KeyValuePair(object):
    """One datastore item as ``list_values`` returns it (attribute access, like st2client's)."""

    def __init__(self, name=None, value=None, secret=False, expire_timestamp=None, **extra):
        self.name = name
        self.value = value
        self.secret = bool(secret)
        self.expire_timestamp = expire_timestamp
        self.scope = extra.pop("scope", SYSTEM_SCOPE)
        self.ttl = extra.pop("ttl", None)
        for key, val in extra.items():
            setattr(self, key, val)

    def to_dict(self):
        return dict(self.__dict__)

    def __repr__(self):
        return "<KeyValuePair name=%s,value=%s>" % (self.name, self.value)


class DatastoreService(object):
    """StackStorm's datastore service semantics on top of the agent connection."""

    def __init__(self, logger, pack_name, class_name, client=None):
        self._logger = logger
        self._pack_name = pack_name
        self._class_name = class_name
        self._client = client if client is not None else default_client()

    def get_user_info(self):
        try:
            username = getpass.getuser()
        except Exception:
            username = None
        return {"username": username}

    def _local_prefix(self):
        return "%s.%s%s" % (self._pack_name, self._class_name, DATASTORE_KEY_SEPARATOR)

    def _full_name(self, name, local):
        return self._local_prefix() + name if local else name

    @staticmethod
    def _check_scope(scope):
        if scope != SYSTEM_SCOPE:
            raise ValueError("Scope %s is unsupported." % (scope,))

    def list_values(self, local=True, prefix=None, limit=None, offset=None):
        """Items whose full name starts with the (local) prefix, as ``KeyValuePair``s."""
        if local:
            key_prefix = self._local_prefix() + (prefix or "")
        else:
            key_prefix = prefix
        items = self._client.call({"op": "kv.list", "prefix": key_prefix}) or []
        values = [KeyValuePair(**item) for item in items if isinstance(item, dict)]
        start = offset or 0
        end = start + limit if limit else None
        return values[start:end]

    def get_value(self, name, local=True, scope=SYSTEM_SCOPE, decrypt=False):
        """The value string, or None when missing or on error (errors are logged)."""
        self._check_scope(scope)
        self._client.require()
        full_name = self._full_name(name, local)
        try:
            return self._client.call(
                {"op": "kv.get", "name": full_name, "scope": scope, "decrypt": bool(decrypt)}
            )
        except Exception as e:
            self._logger.exception(
                "Exception retrieving value from datastore (name=%s): %s", full_name, e
            )
            return None

    def set_value(self, name, value, ttl=None, local=True, scope=SYSTEM_SCOPE, encrypt=False):
        """Store ``str(value)``; raises on failure, returns True."""
        self._check_scope(scope)
        full_name = self._full_name(name, local)
        if not isinstance(value, str):
            value = str(value)
        self._client.call(
            {
                "op": "kv.set",
                "name": full_name,
                "value": value,
                "ttl": int(ttl) if ttl else None,
                "secret": bool(encrypt),
            }
        )
        return True

    def delete_value(self, name, local=True, scope=SYSTEM_SCOPE):
        """True if deleted; False when missing or on error (errors are logged)."""
        self._check_scope(scope)
        self._client.require()
        full_name = self._full_name(name, local)
        try:
            result = self._client.call({"op": "kv.delete", "name": full_name})
        except Exception as e:
            self._logger.exception(
                "Exception deleting value from datastore (name=%s): %s", full_name, e
            )
            return False
        return result if isinstance(result, bool) else True


class DatastoreDelegation(object):
    """The datastore half of `action_service` and `sensor_service`: both hand these calls to
    their `datastore_service` (a DatastoreService with the `<pack>.<Class>:` local prefix)."""

    def get_user_info(self):
        return self.datastore_service.get_user_info()

    def list_values(self, local=True, prefix=None, limit=None, offset=None):
        return self.datastore_service.list_values(local, prefix, limit=limit, offset=offset)

    def get_value(self, name, local=True, scope="system", decrypt=False):
        return self.datastore_service.get_value(name, local, scope=scope, decrypt=decrypt)

    def set_value(self, name, value, ttl=None, local=True, scope="system", encrypt=False):
        return self.datastore_service.set_value(
            name, value, ttl, local, scope=scope, encrypt=encrypt
        )

    def delete_value(self, name, local=True, scope="system"):
        return self.datastore_service.delete_value(name, local, scope=scope)


def import_file(file_path, kind, after=()):
    """Import an action or sensor file as a module: its directory (then `after`) appended to
    sys.path, under a name that cannot replace a module already loaded (a file called
    "json.py" must not shadow the stdlib for everyone). Import errors propagate."""
    import importlib.machinery
    import importlib.util
    import os
    import sys

    for directory in [os.path.dirname(file_path)] + list(after):
        if directory not in sys.path:
            sys.path.append(directory)
    module_name = os.path.splitext(os.path.basename(file_path))[0] or kind
    if module_name in sys.modules:
        module_name = "packd_%s_%s" % (kind, module_name)
    loader = importlib.machinery.SourceFileLoader(module_name, file_path)
    spec = importlib.util.spec_from_loader(module_name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    loader.exec_module(module)
    return module
