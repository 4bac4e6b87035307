"""Long-format tables with shuffled rows, gaps and inputs, for the sharding tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def long_table(n_sequences: int = 40, seed: int = 0, inputs: bool = True) -> pd.DataFrame:
    """Rows of ``n_sequences`` sequences of 1..24 steps at irregular times, ~25% of one
    feature missing, rows shuffled so that a sequence's rows are spread over the file."""
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(n_sequences):
        T = int(rng.integers(1, 25))
        t = np.sort(rng.choice(10_000, T, replace=False)) * 0.25
        frame = {"pid": f"p{i:03d}", "time": t, "a": rng.normal(3.0, 2.0, T),
                 "b": np.where(rng.random(T) < 0.25, np.nan, rng.normal(-1e3, 5.0, T))}
        if inputs:
            frame["u"] = rng.normal(size=T)
        parts.append(pd.DataFrame(frame))
    table = pd.concat(parts, ignore_index=True)
    return table.sample(frac=1.0, random_state=seed).reset_index(drop=True)
