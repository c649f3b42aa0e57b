"""``st2common.util.shell``: shell quoting helpers (packd shim)."""

import shlex

__all__ = ["quote_unix", "quote_windows"]


def quote_unix(value):
    """Quote ``value`` for a POSIX shell (``shlex.quote``), as StackStorm does."""
    return shlex.quote(str(value))


def quote_windows(value):
    """Quote ``value`` for cmd.exe the way ``subprocess.list2cmdline`` does."""
    import subprocess

    return subprocess.list2cmdline([str(value)])
