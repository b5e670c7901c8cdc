"""``annoloop up``'s worker: a child process restarted whenever it dies, and never orphaned.

The embedded setup has nobody else to restart a worker that crashed or was killed (out of
memory, a stray ``kill``): without this the API kept answering while cycles stayed
``created`` for ever. Restarts back off (1 s doubling to 30 s) so a worker that cannot start
does not spin.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

log = logging.getLogger("annoloop.up")
PARENT_ENV = "ANNOLOOP_PARENT_PID"
_MAX_DELAY = 30.0


class Supervised:
    """Runs ``argv`` as a child and starts it again when it exits unasked."""

    def __init__(self, argv: Sequence[str], env: dict[str, str]) -> None:
        self._argv = list(argv)
        self._env = {**env, PARENT_ENV: str(os.getpid())}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.restarts = 0
        self.proc = self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)
        self._watcher.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # No preexec_fn: the API's threads run by the time of a restart, where a fork that runs
        # Python before exec is unsafe. The child ties itself to us (``die_with_parent``).
        return subprocess.Popen(self._argv, env=self._env)

    def _watch(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            code = self.proc.wait()
            started = time.monotonic()
            if self._stopping.is_set():
                return
            log.warning("the worker exited (code %s); restarting it in %.0f s", code, delay)
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.proc = self._spawn()
                self.restarts += 1
            # A worker that ran a while before dying starts the back-off afresh.
            delay = 1.0 if time.monotonic() - started > 60 else min(delay * 2, _MAX_DELAY)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM (Celery's warm shutdown: finish or hand back the task), then SIGKILL."""
        with self._lock:
            self._stopping.set()
            proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def die_with_parent() -> None:
    """In a supervised child: get SIGTERM when ``annoloop up`` dies (Linux), and exit now if
    it is already gone (it may have died before this ran)."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(parent):
        sys.exit("annoloop up is gone; the worker stops too")
