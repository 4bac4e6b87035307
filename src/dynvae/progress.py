"""Progress shown on the terminal (standard error) for every phase that may take more
than a couple of seconds: training, evaluation, GP fitting, dataset parsing.

``progress_bar`` is tqdm's bar with the house settings; ``quiet()`` gives one that shows
nothing, for callers that pass no bar. Bars are drawn on a terminal only (not into logs
or captured output), and only by the main process of a ``torchrun`` launch (rank 0).
"""

from __future__ import annotations

import os
import sys
import time


def is_main_process() -> bool:
    """True unless this process is a non-zero rank of a torchrun launch."""
    return int(os.environ.get("RANK", "0")) == 0


def shown(enabled: bool = True) -> bool | None:
    """tqdm's ``disable`` for a bar: None (shown when standard error is a terminal, so
    logs and captured output get no bar lines) when ``enabled`` on the main process, else
    True."""
    return None if enabled and is_main_process() else True


LINE_SECONDS = 10.0    # a bar that is not drawn writes a plain status line at most this often


def progress_bar(total: float | None, desc: str, unit: str = "it", enabled: bool = True,
                 **kwargs):
    """A tqdm bar on standard error, drawn on a terminal by the main process when
    ``enabled``. Where it is not drawn because standard error is not a terminal (a log,
    captured output) but was ``enabled``, a phase that runs long still shows in the log:
    at most one plain line every ``LINE_SECONDS`` ("evaluate: imputation, 3/30 seq,
    41 s"), written when the bar is updated; a phase shorter than that writes none."""
    from tqdm.auto import tqdm

    class LoggedBar(tqdm):
        def __init__(self, *args, **kw) -> None:
            super().__init__(*args, **kw)
            self._lines = enabled and is_main_process() and bool(self.disable)
            self._name, self._phase, self._count = desc, "", 0.0
            self._start = self._last = time.monotonic()

        def update(self, n: float | None = 1):
            if self._lines:
                self._count += 1 if n is None else n
                now = time.monotonic()
                if now - self._last >= LINE_SECONDS:
                    self._last = now
                    phase = f" {self._phase}," if self._phase else ""
                    of = f"/{self.total:g}" if self.total else ""
                    print(f"{self._name}:{phase} {self._count:g}{of} {unit}, "
                          f"{now - self._start:.0f} s", file=sys.stderr, flush=True)
            return super().update(n)

        def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
            self._phase = desc or ""
            super().set_description(desc, refresh=refresh)

    return LoggedBar(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr,
                     disable=shown(enabled), **kwargs)


def quiet():
    """A bar that shows nothing (``update``/``set_description`` do nothing visible)."""
    return progress_bar(None, "", enabled=False)


def say(message: str) -> None:
    """Print a status line on standard output from the main process only."""
    if is_main_process():
        print(message, flush=True)
