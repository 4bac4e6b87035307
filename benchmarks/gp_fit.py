"""The ``fit/co2`` case of benchmarks/gp.py: fitting the Mauna Loa CO2 series end to end
(``dynvae gp`` in a fresh process: wall time, CPU time, peak memory) against scikit-learn's
exact GP on the same kernel structure. See benchmarks/gp.py."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

_CLI = """
import json, resource, sys, time
from dynvae.cli import main
code = main(sys.argv[1:])
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"rc": code, "peak_rss_mb": usage.ru_maxrss / 1024,
                  "cpu_seconds": usage.ru_utime + usage.ru_stime}))
"""


def co2_table(quick: bool, folder: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``dynvae gp`` data arguments for the CO2 series (every 4th week when quick), and the
    series itself (t, x) for the peers."""
    from dynvae.data import load_dataset
    seq = load_dataset("co2").sequences[0]
    if not quick:
        return ["--dataset", "co2"], seq.t, seq.x[:, 0]
    csv = folder / "co2_every4.csv"
    t, x = seq.t[::4], seq.x[::4, 0]
    pd.DataFrame({"year": t, "co2": x}).to_csv(csv, index=False)
    return ["--data", str(csv), "--time-col", "year", "--value-col", "co2"], t, x


def dynvae_cli_fit(data_args: list[str], folder: Path, extra: list[str]) -> dict:
    out = folder / "run"
    argv = ["gp", *data_args, "--kernel", "matern52+quasiperiodic", "--out", str(out),
            "--force", *extra]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CLI, *argv], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    return {"seconds": seconds, "peak_rss_mb": report["peak_rss_mb"],
            "cpu_seconds": report["cpu_seconds"],
            "log_marginal_likelihood": metrics["log_marginal_likelihood"],
            "n_evaluations": metrics["n_evaluations"]}


def sklearn_fit(t: np.ndarray, x: np.ndarray) -> dict:
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel as C
    from sklearn.gaussian_process.kernels import ExpSineSquared, Matern, WhiteKernel
    ok = np.isfinite(x)
    y = (x[ok] - x[ok].mean()) / x[ok].std()
    kernel = (C(0.5) * Matern(5.0, nu=2.5) + C(0.5) * Matern(5.0, nu=1.5)
              * ExpSineSquared(1.0, 1.0) + WhiteKernel(1e-3))
    start = time.perf_counter()
    gpr = GaussianProcessRegressor(kernel, n_restarts_optimizer=0).fit(t[ok, None], y)
    seconds = time.perf_counter() - start
    lml = gpr.log_marginal_likelihood_value_ - ok.sum() * np.log(x[ok].std())
    return {"seconds": seconds, "log_marginal_likelihood": float(lml)}


def run_fit_rows(quick: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_args, t, x = co2_table(quick, Path(tmp))
        case = "fit/co2" + ("-every4" if quick else "")
        runs = {"dynvae-gp-cli": lambda: dynvae_cli_fit(data_args, Path(tmp), []),
                "dynvae-gp-cli-order6-parallel": lambda: dynvae_cli_fit(
                    data_args, Path(tmp), ["--order", "6", "--engine", "parallel"])}
        if not quick:
            runs["scikit-learn"] = lambda: sklearn_fit(t, x)
        for impl, fn in runs.items():
            try:
                row = {"case": case, "impl": impl, "T": len(t), **fn()}
            except ImportError as err:
                print(f"skipping {impl}: not installed ({err})")
                continue
            except RuntimeError as err:
                print(f"{impl} {case}: failed ({err})")
                continue
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def print_fit_table(fits: list[dict]) -> None:
    if not fits:
        return
    print("\n| case | impl | seconds | cpu seconds | peak RSS MB | log marginal likelihood |"
          " evaluations |\n|---|---|---|---|---|---|---|")
    for r in fits:
        print(f"| {r['case']} | {r['impl']} | {r['seconds']:.1f} | "
              f"{r.get('cpu_seconds', float('nan')):.1f} | "
              f"{r.get('peak_rss_mb', float('nan')):.0f} | "
              f"{r['log_marginal_likelihood']:.2f} | {r.get('n_evaluations', '-')} |")
