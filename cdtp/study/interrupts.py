"""What Ctrl-C (SIGINT) does to a run.

:class:`StopOnInterrupt` is installed by ``cdtp run`` around a simulation: the first SIGINT
asks the simulation to stop at the next safe point (the end of the current time step; the
cycle in progress is dropped) and the run writes what it completed, marked ``interrupted``;
a second SIGINT raises :class:`KeyboardInterrupt`, and nothing is written. Brian2 installs its
own SIGINT handler when it is imported (which stops a running network silently and lets the
caller go on as if the run were complete), so the handler here is installed after importing
Brian2 and replaces it for the duration.

:func:`ignore_interrupts` is for worker processes of a sweep: the terminal sends SIGINT to the
whole process group, and the parent alone decides what happens.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

__all__ = ["RaiseOnInterrupt", "Shielded", "StopOnInterrupt", "ignore_interrupts"]


class _SigintHandler:
    """A context manager that installs ``self._handle`` for SIGINT in the main thread and
    restores the previous handler on exit (elsewhere it does nothing). With
    ``_replace_brian2``, brian2 is imported first, so that the handler brian2 installs on import
    is the one replaced."""

    _replace_brian2 = True

    def __init__(self):
        self._previous = None
        self._installed = False

    def _handle(self, signum, frame):  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            if self._replace_brian2:
                try:
                    import brian2  # noqa: F401  (installs its own handler on import)
                except ImportError:  # pragma: no cover - brian2 is a dependency
                    pass
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False


class _WithStops(_SigintHandler):
    """:class:`_SigintHandler` with the stop-callback protocol that
    :func:`cdtp.brian.simulation.simulate` follows: :attr:`requested`, :attr:`aborted`,
    :meth:`on_stop`, :meth:`remove_stop`."""

    def __init__(self):
        super().__init__()
        self.requested = False
        self.aborted = False
        self._stops: list[Callable[[], None]] = []

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the first SIGINT (e.g. a Brian2 network's ``stop``); if the
        interrupt came already, call it now."""
        self._stops.append(callback)
        if self.requested:
            callback()

    def remove_stop(self, callback: Callable[[], None]) -> None:
        """Forget a callback of :meth:`on_stop` (its simulation is over)."""
        if callback in self._stops:
            self._stops.remove(callback)


class StopOnInterrupt(_WithStops):
    """A context manager: the first SIGINT sets :attr:`requested` and calls the registered
    stop callbacks; the second sets :attr:`aborted` and raises :class:`KeyboardInterrupt`.

    Outside the main thread (where Python cannot install signal handlers) it does nothing.
    """

    def __init__(self, message: str = "interrupted: stopping after the current time step and"
                                      " writing what is complete (Ctrl-C again to abort and"
                                      " write nothing)"):
        super().__init__()
        self.message = message

    def _handle(self, signum, frame):
        if self.requested:
            # (an exception raised in a signal handler can be swallowed, e.g. when it lands in
            # a garbage-collector callback: ``aborted`` stays set for the caller to check)
            self.aborted = True
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{self.message}", file=sys.stderr, flush=True)
        for stop in self._stops:
            stop()



def ignore_interrupts() -> None:
    """Ignore SIGINT in this process (a sweep's worker: its parent handles Ctrl-C)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class RaiseOnInterrupt(_WithStops):
    """A context manager around a sweep, whose points are either complete or not recorded.

    With ``immediately`` (waiting on Dask workers), SIGINT raises :class:`KeyboardInterrupt`
    at once (Python's own behaviour, which Brian2's handler replaces on import). Without (a
    sweep run in this process), it asks the simulation in progress to abort at its next safe
    point, writing nothing (an exception raised from a signal handler can land in a
    garbage-collector callback, where Python prints and drops it): it sets :attr:`requested`
    and :attr:`aborted` and calls the stop callbacks, the protocol of :class:`StopOnInterrupt`
    that :func:`cdtp.brian.simulation.simulate` follows; :meth:`check` raises between points.
    """

    message = "interrupted: stopping (the point in progress is not recorded)"

    def __init__(self, immediately: bool = True):
        super().__init__()
        self.immediately = immediately

    def _handle(self, signum, frame):
        first = not self.requested
        self.requested = self.aborted = True
        if self.immediately:
            raise KeyboardInterrupt
        if first:
            print(f"\n{self.message}", file=sys.stderr, flush=True)
        for stop in self._stops:
            stop()

    def check(self) -> None:
        """Raise :class:`KeyboardInterrupt` if a SIGINT came."""
        if self.requested:
            raise KeyboardInterrupt



class Shielded(_SigintHandler):
    """A context manager for clean-up that must finish (shutting down a sweep's workers):
    SIGINT only prints ``message``."""

    _replace_brian2 = False

    def __init__(self, message: str):
        super().__init__()
        self.message = message

    def _handle(self, signum, frame):
        print(f"\n{self.message}", file=sys.stderr, flush=True)
