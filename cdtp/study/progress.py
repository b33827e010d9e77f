"""Progress bars of ``cdtp run`` and ``cdtp sweep`` on stderr (tqdm).

A bar is drawn only when stderr is a terminal and ``--quiet`` was not given, so output
redirected to a file or a pipe stays clean. The environment variable ``CDTP_PROGRESS`` overrides
that: ``1`` draws the bar whatever stderr is (e.g. to follow a run through a pipe), ``0`` never
draws it.

- :class:`RunProgress`: cycles done of a run, with rate (cycles/s) and ETA; advanced after
  every chunk of cycles and, within a chunk, by Brian2's ``report`` hook (see
  :func:`cdtp.brian.simulation.simulate`'s ``tick``) or after every cycle of the reference map.
- :class:`SweepProgress`: points done of a sweep, with how many are running and how many failed,
  and an ETA.
"""

from __future__ import annotations

import os
import sys

__all__ = ["RunProgress", "SweepProgress", "enabled"]


def enabled(quiet: bool = False, stream=None) -> bool:
    """Whether to draw a bar on ``stream`` (default stderr): not ``quiet``, and a terminal,
    unless ``CDTP_PROGRESS`` is ``1`` (always) or ``0`` (never)."""
    forced = os.environ.get("CDTP_PROGRESS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if quiet:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _Bar:
    def __init__(self, label: str, unit: str, quiet: bool, stream=None, mininterval=0.1):
        self.label, self.unit, self.mininterval = label, unit, mininterval
        self.stream = sys.stderr if stream is None else stream
        self.on = enabled(quiet, self.stream)
        self.bar = None

    def _open(self, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=self.label, unit=self.unit, file=self.stream,
                        dynamic_ncols=True, smoothing=0.1, leave=True,
                        mininterval=self.mininterval, miniters=1)

    def _set(self, done, total: int) -> None:
        if not self.on:
            return
        if self.bar is None:
            self._open(total)
        self.bar.total = total
        advance = done - self.bar.n
        if advance > 0:
            self.bar.update(advance)
        else:
            self.bar.refresh()

    def close(self) -> None:
        """End the bar (a run cut short never drew its last update)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class RunProgress(_Bar):
    """``progress(cycles_done, n_cycles)``: the bar of one run (cycles, rate, ETA)."""

    def __init__(self, label: str, quiet: bool = False, stream=None, mininterval=0.1):
        super().__init__(label, "cycle", quiet, stream, mininterval)

    def __call__(self, done, total: int) -> None:
        self._set(int(done), total)


class SweepProgress(_Bar):
    """``progress(points_done, n_points, running=…, failed=…)``: the bar of a sweep (points,
    ETA) with the points running and failed so far."""

    def __init__(self, label: str, quiet: bool = False, stream=None, mininterval=0.1):
        super().__init__(label, "point", quiet, stream, mininterval)

    def __call__(self, done: int, total: int, running: int = 0, failed: int = 0) -> None:
        if not self.on:
            return
        if self.bar is None:
            self._open(total)
        self.bar.set_postfix_str(f"running {running}, failed {failed}", refresh=False)
        self._set(done, total)
