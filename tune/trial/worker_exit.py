"""A trial's worker process ends when Ray asks it to (SIGTERM), at once and without a traceback.

Ray's worker loop handles SIGTERM by raising ``SystemExit`` wherever the main thread happens to be
(``ray/_private/worker.py``, ``main_loop``). Ray sends it when a search ends or a trial's actor is
removed; when it lands in a weakref callback run by the garbage collector, Python cannot raise it
there, prints ``Exception ignored in: <function WeakSet.__init__.<locals>._remove ...> ...
sigterm_handler ... SystemExit: 1`` to the worker's stderr (which Ray forwards to the driver's
terminal) and the worker carries on until Ray kills it (seen in a normal, successful search).

`quiet_sigterm` installs a handler that flushes the output and ends the process with
``os._exit(1)`` (the status Ray's own handler gives), from any frame. It must be called on the
process's main thread: a trial's actor is created there (`QuietExitOnSigterm`, Tune's trainable
mixin), the multi-GPU workers and the anchor store in their ``__init__``. Nothing of a trial is
lost: every report's checkpoint reached the storage before its ``tune.report`` returned.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _end_now(signum, frame) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream: nothing to flush
            pass
    os._exit(1)


def quiet_sigterm() -> bool:
    """Install the quiet SIGTERM handler (module docstring); False off the main thread (not installed)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGTERM, _end_now)
    return True


class QuietExitOnSigterm:
    """Mixin of the search's Tune trainable (``__mixins__`` of its function, which Tune's
    ``wrap_function`` puts before ``FunctionTrainable``): ``setup`` runs in the trial actor's
    creation task, on the worker's main thread, where a signal handler can be installed."""

    def setup(self, config):
        quiet_sigterm()
        super().setup(config)
