"""Progress shown on the terminal (standard error) for every phase that may take more
than a couple of seconds: training, evaluation, GP fitting, dataset parsing.

``progress_bar`` is tqdm's bar with the house settings; ``quiet()`` gives one that shows
nothing, for callers that pass no bar. Bars are drawn on a terminal only (not into logs
or captured output), and only by the main process of a ``torchrun`` launch (rank 0).
"""

from __future__ import annotations

import os
import sys


def is_main_process() -> bool:
    """True unless this process is a non-zero rank of a torchrun launch."""
    return int(os.environ.get("RANK", "0")) == 0


def shown(enabled: bool = True) -> bool | None:
    """tqdm's ``disable`` for a bar: None (shown when standard error is a terminal, so
    logs and captured output get no bar lines) when ``enabled`` on the main process, else
    True."""
    return None if enabled and is_main_process() else True


def progress_bar(total: float | None, desc: str, unit: str = "it", enabled: bool = True,
                 **kwargs):
    """A tqdm bar on standard error, drawn on a terminal by the main process when
    ``enabled``."""
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr,
                disable=shown(enabled), **kwargs)


def quiet():
    """A bar that shows nothing (``update``/``set_description`` do nothing visible)."""
    return progress_bar(None, "", enabled=False)


def say(message: str) -> None:
    """Print a status line on standard output from the main process only."""
    if is_main_process():
        print(message, flush=True)
