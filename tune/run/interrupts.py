"""SIGINT and SIGTERM during a search: a graceful stop that is said to be one.

Ray Tune stops a search gracefully on SIGINT (its experiment state saved, the unfinished trials
left to ``Tuner.restore``) but then returns as if it had finished: the driver wrote a front, a
"recommended" trial and exit status 0 from a partial search. And ``ray.init`` installs a SIGTERM
handler (``sys.exit``) that ends the driver in the middle of Tune's loop: measured, an abort in
Ray's C++ teardown (exit 134), nothing saved after the last periodic snapshot.

`Interrupts` replaces both handlers while a search runs. The first SIGINT or SIGTERM (what Ctrl+C,
``timeout``, a batch scheduler and Kubernetes send) asks Tune for its own graceful stop, the one
Ray gives SIGINT (Tune's SIGUSR1 handler: it ends Tune's loop, saves the experiment state, leaves
the unfinished trials resumable); a second one says it is stopping already; a third ends the
process at once (like SIGKILL: ``--resume`` continues from the last snapshot). The search then
writes its outputs as a partial search, marked interrupted, and exits with 128 + the signal's
number (130 for SIGINT, 143 for SIGTERM), printing the ``--resume`` command.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Ray Tune's own lines about the stop: "Press CTRL+C ... to skip" (here a second one does not skip
# the final save) and "Resume experiment with: Tuner.restore(...)" (here: --resume). Ours replace them.
_RAY_LINES = ("Stop signal received", "Experiment has been interrupted")


class _DropRayStopLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_RAY_LINES)


class Interrupts:
    """The search's SIGINT / SIGTERM handler (module docstring). ``with Interrupts() as i``
    installs it (`install` again after ``ray.init``, which installs its own SIGTERM handler) and
    puts the previous handlers back on exit; ``i.received`` lists the signals' names."""

    def __init__(self, *, resume_command: str = ""):
        self.received: list[str] = []
        self.resume_command = resume_command
        self._previous: dict = {}  # signal -> handler, and the environment variable's value
        self._filter = _DropRayStopLines()

    @property
    def signal(self) -> str | None:
        """The first signal received (None: none)."""
        return self.received[0] if self.received else None

    @property
    def exit_status(self) -> int:
        """128 + the first signal's number (the shell's convention for a process a signal ended)."""
        return 128 + int(getattr(signal, self.signal)) if self.signal else 0

    def install(self) -> None:
        # Tune would put its own SIGINT handler over ours when its loop starts; it keeps SIGUSR1's
        self._previous.setdefault("TUNE_DISABLE_SIGINT_HANDLER", os.environ.get("TUNE_DISABLE_SIGINT_HANDLER"))
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        for sig in SIGNALS:
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)
        logging.getLogger("ray.tune.tune").addFilter(self._filter)

    def __enter__(self):
        self.install()
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            if isinstance(sig, str):  # the environment variable
                os.environ.pop(sig, None) if previous is None else os.environ.__setitem__(sig, previous)
            else:
                signal.signal(sig, previous)
        logging.getLogger("ray.tune.tune").removeFilter(self._filter)

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        self.received.append(name)
        if len(self.received) >= 3:
            print(f"\n{name} again: ending at once, without saving the search's state; {self._resume_hint()}",
                  file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(128 + signum)
        if len(self.received) == 2:
            print(f"\n{name}: already stopping (the trials are being stopped and the search's state saved); "
                  "a third signal ends at once without saving it", file=sys.stderr, flush=True)
            return
        print(f"\ninterrupted ({name}): stopping the trials and saving the search's state, then writing the "
              f"outputs of the reports so far; {self._resume_hint()}", file=sys.stderr, flush=True)
        tune_stop = signal.getsignal(signal.SIGUSR1)  # Ray Tune's graceful stop, installed while Tune runs
        if callable(tune_stop):
            tune_stop(signal.SIGUSR1, frame)
            signal.signal(signal.SIGINT, self._handle)  # Tune's handler puts back the one before it: ours

    def _resume_hint(self) -> str:
        return f"continue with: {self.resume_command}" if self.resume_command else "continue with --resume"


def resume_command(args, name: str, storage: str) -> str:
    """The command that continues this search (``--resume``), as a shell line."""
    words = ["python", "-m", "tune.search", "--space", str(Path(args.space).resolve()), "--storage", storage,
             "--name", name]
    if args.address:
        words += ["--address", args.address]
    if args.num_samples is not None:
        words += ["--num-samples", str(args.num_samples)]
    if args.no_cache:
        words.append("--no-cache")
    if args.wait_for_resources:
        words += ["--wait-for-resources", f"{args.wait_for_resources:g}"]
    return shlex.join([*words, "--resume"])
