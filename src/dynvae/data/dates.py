"""Text dates of a time column: one reading per column, never a guess per value.

A column of dates is read in one format for all its rows. ISO 8601 is read as such;
any other format comes from the first value, and must read every value, and only one
way: ``01/03/2021`` is 1 March day-first and 3 January month-first, so a column whose
every value reads both ways with different results needs its format given
(``date_format``, ``--date-format``). Mixed formats are refused, naming the rows: read
value by value, ISO dates and ``dd/mm/YYYY`` dates in one column would give a series
that silently jumps months.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from dynvae.errors import DataError

try:
    from pandas.tseries.api import guess_datetime_format
except ImportError:         # pandas < 2.2
    from pandas._libs.tslibs.parsing import guess_datetime_format


def _parse_dates(series: pd.Series, **kwargs) -> pd.Series:
    """pd.to_datetime with NaT for values that do not parse; offsets that differ between
    values (e.g. across a daylight saving change) give UTC times."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            return pd.to_datetime(series, errors="coerce", **kwargs)
        except (ValueError, TypeError):
            try:
                return pd.to_datetime(series, errors="coerce", utc=True, **kwargs)
            except (ValueError, TypeError):
                return pd.Series(pd.NaT, index=series.index)


def parse_dates_in_format(series: pd.Series, name: str, date_format: str) -> pd.Series:
    """Dates of ``series`` in the strftime format ``date_format``; DataError naming the
    rows of the time column ``name`` that do not match it."""
    stamps = _parse_dates(series, format=date_format)
    bad = stamps.isna().to_numpy()
    if bad.any():
        raise DataError(f"time column {name!r} does not match the date format "
                        f"{date_format!r} at {_rows(bad)} (e.g. "
                        f"{series.iloc[int(np.argmax(bad))]!r})")
    return stamps


def parse_text_dates(series: pd.Series, name: str) -> pd.Series:
    """Dates parsed from text, NaT where a value is not a date at all.

    ISO 8601 in every row is read as such. Otherwise the format of the first value (read
    month-first and day-first) must read every date, and only one way: mixed formats,
    and a format that reads every value both ways with different results (01/03/2021),
    are a DataError naming the rows, with date_format (--date-format) to say which.
    """
    iso = _parse_dates(series, format="ISO8601")
    if iso.notna().all():
        return iso
    first = str(series.iloc[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        guesses = {guess_datetime_format(first, dayfirst=d) for d in (False, True)} - {None}
    readings = {f: _parse_dates(series, format=f) for f in sorted(guesses)}
    complete = {f: r for f, r in readings.items() if r.notna().all()}
    if len(complete) == 1:
        return next(iter(complete.values()))
    if len(complete) > 1:
        (fa, a), (fb, b) = list(complete.items())[:2]
        differ = (a != b).to_numpy()
        if not differ.any():
            return a
        raise DataError(f"time column {name!r} has dates that read two ways, as {fa!r} and "
                        f"as {fb!r}, at {_rows(differ)} (e.g. "
                        f"{series.iloc[int(np.argmax(differ))]!r}); give the date format "
                        "(--date-format or date_format=)")
    loose = _parse_dates(series, format="mixed")       # any date, value by value
    if not readings:       # no format to follow: accept only dates that read one way
        differ = (loose.notna() & (loose != _parse_dates(series, format="mixed",
                                                          dayfirst=True))).to_numpy()
        if differ.any():
            raise DataError(f"time column {name!r} has dates that read both day-first and "
                            f"month-first at {_rows(differ)} (e.g. "
                            f"{series.iloc[int(np.argmax(differ))]!r}); give the date format "
                            "(--date-format or date_format=)")
        return loose
    fmt, best = max(readings.items(), key=lambda item: int(item[1].notna().sum()))
    other = (best.isna() & loose.notna()).to_numpy()
    if other.any():
        raise DataError(f"time column {name!r} mixes date formats: {_rows(other)} (e.g. "
                        f"{series.iloc[int(np.argmax(other))]!r}) do not follow {fmt!r} of "
                        f"row 0 ({first!r}); write every date in one format, or give the "
                        "format (--date-format or date_format=)")
    return best


def _rows(bad: np.ndarray, limit: int = 5) -> str:
    """'row 3', 'rows 3, 7, 9' or 'rows 3, 7, 9, 10, 12 and 4 more' for the True entries
    of ``bad``."""
    rows = np.flatnonzero(bad)
    text = ", ".join(str(int(r)) for r in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"{'row' if len(rows) == 1 else 'rows'} {text}{more}"


def days_since_first(stamps: pd.Series) -> tuple[np.ndarray, str, str]:
    origin = stamps.min()
    days = ((stamps - origin) / pd.Timedelta(days=1)).to_numpy(dtype=np.float64)
    return days, origin.isoformat(), "days"
