"""Simple imputation baselines beside a ``dynvae train`` run, on the same hidden entries.

Reads RUN/config.json (data spec and seed) and RUN/metrics.json, rebuilds the run's test
split, hides the entries that ``dynvae train`` / ``dynvae evaluate`` hide for
``test_imputation_mse`` (EvalSettings: 10 % of the observed test entries, seeded by the
run's seed) and scores the per-feature training mean, last observation carried forward
and linear interpolation in time at those entries, original scale.

    python benchmarks/imputation_baselines.py RUN --json baselines.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_baselines as qb  # noqa: E402

from dynvae.commands.train import load_splits  # noqa: E402
from dynvae.train.evaluation import EvalSettings, hide_entries  # noqa: E402
from dynvae.utils import atomic_write_json  # noqa: E402


def with_nan(data) -> tuple[np.ndarray, np.ndarray]:
    """x (B, T, D) with NaN where missing or padded, and t (B, T)."""
    batch = data.to_batch(dtype=torch.float64)
    x = torch.where(batch.mask, batch.x, torch.full_like(batch.x, math.nan)).numpy()
    return x, batch.t.numpy()


def baseline_rows(run: Path) -> list[dict]:
    config = json.loads((run / "config.json").read_text())
    _, train, _, test, _ = load_splits(config["data"], config["seed"])
    settings = EvalSettings(seed=config["seed"])
    hidden = hide_entries(test.to_batch(dtype=torch.float64), settings.hide_fraction,
                          settings.seed).numpy()                              # (B, T, D)
    x_train, _ = with_nan(train)
    mean = np.nanmean(x_train, (0, 1))                                        # (D,)
    x, t = with_nan(test)
    rows = []
    for name, impute in qb.IMPUTERS.items():
        start = time.perf_counter()
        pred = impute(np.where(hidden, np.nan, x), t, mean)
        rows.append({"case": f"imputation_{run.name}", "impl": f"baseline: {name}",
                     "seconds": time.perf_counter() - start,
                     "test_imputation_mse": float(((pred - x)[hidden] ** 2).mean()),
                     "test_imputation_entries": int(hidden.sum())})
    metrics_path = run / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        rows.append({"case": f"imputation_{run.name}", "impl": config["model"],
                     "seconds": metrics.get("fit_seconds", float("nan")),
                     "test_imputation_mse": metrics["test_imputation_mse"],
                     "test_imputation_entries": int(metrics["test_imputation_entries"])})
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run directory written by dynvae train")
    p.add_argument("--json", type=Path, default=None, help="write result rows to this file")
    args = p.parse_args(argv)
    rows = baseline_rows(args.run)
    print(f"{'impl':<22}{'imputation MSE':>16}{'entries':>9}")
    for r in rows:
        print(f"{r['impl']:<22}{r['test_imputation_mse']:>16.5g}"
              f"{r['test_imputation_entries']:>9}")
    if args.json is not None:
        atomic_write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
