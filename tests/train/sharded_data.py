"""The tiny model's dense test data written as a shard directory."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dynvae.data.shard_writer import write_shards
from dynvae.data.sharded import ShardedDataset


def shard_tensor(x, folder, shards: int = 4) -> ShardedDataset:
    """Shard (N, T, D) values (NaN = missing) as sequences ``q000``.. at times 0..T-1."""
    x = np.asarray(x)
    n, T, D = x.shape
    frame = pd.DataFrame(x.reshape(n * T, D), columns=[f"x{d}" for d in range(D)])
    frame.insert(0, "t", np.tile(np.arange(T, dtype=float), n))
    frame.insert(0, "id", np.repeat([f"q{i:03d}" for i in range(n)], T))
    frame.to_parquet(folder / "table.parquet")
    write_shards(folder / "table.parquet", folder / "shards", id_col="id", time_col="t",
                 shards=shards, batch_rows=50)
    return ShardedDataset(folder / "shards")
