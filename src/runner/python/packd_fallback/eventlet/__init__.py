"""packd's stand-in for ``eventlet``, for sensors whose virtualenv does not have the real one.

packd's sensor wrapper puts this directory LAST on ``sys.path``, after the pack's virtualenv, so a
real eventlet always wins. This covers what StackStorm sensors call: ``sleep``, ``spawn``,
``spawn_n``, ``spawn_after``, ``monkey_patch`` (a no-op: packd does not run sensors on green
threads), a minimal ``GreenPool`` and ``Timeout``. Green threads are OS threads here (daemon
threads: like eventlet's, they do not keep the process alive), and ``Timeout`` cannot interrupt
running code — it only reports whether its time passed.
"""

import sys
import threading
import time

__all__ = [
    "GreenPool",
    "GreenThread",
    "Timeout",
    "getcurrent",
    "monkey_patch",
    "sleep",
    "spawn",
    "spawn_after",
    "spawn_n",
]

PACKD_SHIM = True

sys.stderr.write("WARNING packd: using the eventlet shim (sleep, spawn, monkey_patch only)\n")
sys.stderr.flush()


def sleep(seconds=0):
    time.sleep(seconds)


def monkey_patch(*args, **kwargs):
    """A no-op: the standard library is used as it is."""
    return None


def is_monkey_patched(module):
    return False


def getcurrent():
    return threading.current_thread()


class GreenThread(object):
    """A thread with eventlet's ``wait()`` (result or exception) and ``link()``."""

    def __init__(self, func, args, kwargs, delay=0):
        self._func = func
        self._args = args
        self._kwargs = kwargs
        self._delay = delay
        self._done = threading.Event()
        self._canceled = False
        self._result = None
        self._error = None
        self._links = []
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()

    def _main(self):
        if self._delay:
            time.sleep(self._delay)
        if not self._canceled:
            try:
                self._result = self._func(*self._args, **self._kwargs)
            except BaseException as e:  # handed to wait(), as eventlet does
                self._error = e
        self._done.set()
        for func, args, kwargs in list(self._links):
            func(self, *args, **kwargs)

    def wait(self):
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result

    def link(self, func, *args, **kwargs):
        self._links.append((func, args, kwargs))

    def dead(self):
        return self._done.is_set()

    def cancel(self, *throw_args):
        """Stops a ``spawn_after`` call that has not started yet (threads cannot be killed)."""
        self._canceled = True

    kill = cancel


def spawn(func, *args, **kwargs):
    return GreenThread(func, args, kwargs)


def spawn_n(func, *args, **kwargs):
    GreenThread(func, args, kwargs)


def spawn_after(seconds, func, *args, **kwargs):
    return GreenThread(func, args, kwargs, delay=seconds)


class GreenPool(object):
    """At most ``size`` functions running at once; ``spawn`` waits for a free slot."""

    def __init__(self, size=1000):
        self.size = size
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._running = set()

    def _run(self, func, args, kwargs):
        def body():
            try:
                return func(*args, **kwargs)
            finally:
                with self._lock:
                    self._running.discard(threading.current_thread())
                self._slots.release()

        self._slots.acquire()
        thread = GreenThread(body, (), {})
        with self._lock:
            self._running.add(thread._thread)
        return thread

    def spawn(self, func, *args, **kwargs):
        return self._run(func, args, kwargs)

    def spawn_n(self, func, *args, **kwargs):
        self._run(func, args, kwargs)

    def running(self):
        with self._lock:
            return len(self._running)

    def free(self):
        return self.size - self.running()

    def waitall(self):
        while True:
            with self._lock:
                threads = list(self._running)
            if not threads:
                return
            for thread in threads:
                thread.join()

    def imap(self, func, *iterables):
        threads = [self.spawn(func, *args) for args in zip(*iterables)]
        for thread in threads:
            yield thread.wait()


class Timeout(BaseException):
    """``with Timeout(s):`` — cannot interrupt the block; ``expired`` tells if ``s`` passed."""

    def __init__(self, seconds=None, exception=None):
        super().__init__(seconds)
        self.seconds = seconds
        self.exception = exception
        self._started = None
        self.start()

    def start(self):
        self._started = time.monotonic()

    def cancel(self):
        self._started = None

    @property
    def pending(self):
        return self._started is not None

    @property
    def expired(self):
        return (
            self._started is not None
            and self.seconds is not None
            and time.monotonic() - self._started >= self.seconds
        )

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.cancel()
        return False
