"""Model quality on real data: every registered model against simple baselines.

Each model of ``dynvae.models.registry.MODELS`` is trained as ``dynvae train`` would
train it (the command line's defaults, the same 80/10/10 split by sequence or a
dataset's own split, standardised data) with ``--set max_seconds=BUDGET``, on real
datasets that pip packages ship; then scored on the test sequences:

* imputation: 20 % of the observed test entries hidden (fixed seed), MSE and NLL of
  the posterior predictive at the hidden entries, original scale;
* forecasts: the final H steps of each test sequence held out (H as ``dynvae train``
  chooses it), MSE, CRPS and coverage of the central 90 % interval;
* the test importance-weighted bound per time step (K = 16 samples).

Baselines (``quality_baselines.py``): per-feature mean, last observation carried
forward, linear interpolation, naive and seasonal-naive forecasts. The table is
written to docs/results/quality.md, the rows to --json (default
benchmarks/results/quality.json); rows of earlier runs in that file are kept unless
the same cell (dataset, impl, budget) is measured again.

    OMP_NUM_THREADS=1 python benchmarks/quality.py --quick
    python benchmarks/quality.py --budget-seconds 300 --jobs 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_baselines as qb  # noqa: E402

from dynvae.commands.train import fit_model, fit_sections, setup_run  # noqa: E402
from dynvae.models.registry import MODELS, model_class  # noqa: E402
from dynvae.train.evaluation import (  # noqa: E402
    default_horizon,
    hide_entries,
    split_history,
)
from dynvae.utils import atomic_write_json, atomic_write_text, seed_everything  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HIDE_FRACTION, HIDE_SEED, IWAE_K = 0.2, 0, 16

# name -> data spec of ``dynvae train`` (a built-in dataset and its options)
DATASETS = {
    "basic-motions": {"dataset": "basic-motions"},
    "japanese-vowels": {"dataset": "japanese-vowels"},
    "seattle-temps": {"dataset": "seattle-temps"},
    "healing-digits": {"dataset": "healing-digits"},
    "chorales": {"dataset": "chorales"},
    "co2": {"dataset": "co2"},
}


# ------------------------------------------------------------------ arrays
def arrays(data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (B, T, D) with NaN where missing or padded, t (B, T), valid (B, T)."""
    batch = data.to_batch(dtype=torch.float64)
    x = torch.where(batch.mask, batch.x, torch.full_like(batch.x, math.nan)).numpy()
    return x, batch.t.numpy(), batch.valid.numpy()


def is_binary(train) -> bool:
    """Every observed value 0 or 1 (up to the round-off of undoing a standardisation)."""
    values = np.concatenate([s.x[~np.isnan(s.x)] for s in train.sequences])
    return bool((np.minimum(np.abs(values), np.abs(values - 1.0)) < 1e-9).all())


def hidden_entries(data, seed: int) -> np.ndarray:
    """(B, T, D) bool: the observed entries hidden for the imputation scores."""
    return hide_entries(data.to_batch(dtype=torch.float64), HIDE_FRACTION, seed).numpy()


# --------------------------------------------------------------- baselines
def baseline_imputation(train, test, binary: bool) -> dict[str, dict]:
    """Scores of every imputer on the test's hidden entries, spread from the train's."""
    x_tr, t_tr, _ = arrays(train)
    mean = np.nanmean(x_tr, (0, 1))
    hid_tr = hidden_entries(train, HIDE_SEED + 1)
    x_te, t_te, _ = arrays(test)
    hid_te = hidden_entries(test, HIDE_SEED)
    feat_tr = np.broadcast_to(np.arange(x_tr.shape[2]), x_tr.shape)[hid_tr]
    feat_te = np.broadcast_to(np.arange(x_te.shape[2]), x_te.shape)[hid_te]
    out = {}
    for name, impute in qb.IMPUTERS.items():
        pred_tr = impute(np.where(hid_tr, np.nan, x_tr), t_tr, mean)[hid_tr]
        spread = qb.calibrated_spread(x_tr[hid_tr], pred_tr, feat_tr, x_tr.shape[2], mean,
                                      binary)
        pred = impute(np.where(hid_te, np.nan, x_te), t_te, mean)[hid_te]
        m, s = qb.predictive(pred, feat_te, spread, mean, binary)
        out[name] = {"imputation_" + k: v for k, v in
                     qb.scores(x_te[hid_te], m, s, binary).items()}
    return out


def future_arrays(data, horizon: int):
    """The pasts (list of (T_b - H, D)) and held-out futures (B, H, D) of ``data``."""
    past, future = split_history(data, horizon)
    return [s.x for s in past], np.stack([f[1] for f in future])


def baseline_forecasts(train, test, binary: bool, horizon: int) -> dict[str, dict]:
    x_tr, _, valid_tr = arrays(train)
    mean = np.nanmean(x_tr, (0, 1))
    season = qb.season_length(x_tr, valid_tr)
    past_tr, fut_tr = future_arrays(train, horizon)
    past_te, fut_te = future_arrays(test, horizon)
    seen_tr, seen_te = ~np.isnan(fut_tr), ~np.isnan(fut_te)
    feat = lambda f, seen: np.broadcast_to(np.arange(f.shape[2]), f.shape)[seen]
    out = {}
    for name in qb.FORECASTERS:
        pred_tr = qb.forecast_baseline(name, past_tr, horizon, mean, season)[seen_tr]
        spread = qb.calibrated_spread(fut_tr[seen_tr], pred_tr, feat(fut_tr, seen_tr),
                                      x_tr.shape[2], mean, binary)
        pred = qb.forecast_baseline(name, past_te, horizon, mean, season)[seen_te]
        m, s = qb.predictive(pred, feat(fut_te, seen_te), spread, mean, binary)
        label = f"seasonal-naive (m={season})" if name == "seasonal-naive" else name
        out[label] = {"forecast_" + k: v for k, v in
                      qb.scores(fut_te[seen_te], m, s, binary).items()}
    return out


def iid_log_lik_per_step(train, test, binary: bool) -> float:
    """Test log-likelihood per step of independent per-feature Gaussians (Bernoullis for
    binary data) fitted to the training entries: the bound's floor of reference."""
    x_tr, _, _ = arrays(train)
    x_te, _, valid = arrays(test)
    seen = ~np.isnan(x_te)
    feat = np.broadcast_to(np.arange(x_te.shape[2]), x_te.shape)[seen]
    mean = np.nanmean(x_tr, (0, 1))
    if binary:
        lp = -qb.bernoulli_nll(x_te[seen], mean[feat])
    else:
        std = np.maximum(np.nanstd(x_tr, (0, 1)), qb.STD_FLOOR * np.nanstd(x_tr))
        lp = -qb.gaussian_nll(x_te[seen], mean[feat], std[feat])
    return float(lp.sum() / valid.sum())


def baseline_rows(dataset: str, seed: int) -> list[dict]:
    setup = setup_run("lgssm", [], DATASETS[dataset], seed)   # the same split as the models
    train, test = (setup.standardizer.inverse_transform(d) for d in (setup.train, setup.test))
    binary = is_binary(train)
    if binary:                    # 0/1 again after the round-off of the standardisation
        train, test = (d.with_values([np.round(q.x) for q in d.sequences])
                       for d in (train, test))
    horizon = default_horizon(test)
    imp = baseline_imputation(train, test, binary)
    fc = baseline_forecasts(train, test, binary, horizon)
    rows = [{"dataset": dataset, "impl": f"baseline: {name}", **scores} for name, scores in
            imp.items()]
    rows += [{"dataset": dataset, "impl": f"baseline: {name}", **scores} for name, scores in
             fc.items()]
    rows[0]["test_iwae_per_step"] = iid_log_lik_per_step(train, test, binary)
    for row in rows:
        row.update(case=f"{dataset} (binary)" if binary else dataset, seconds=0.0,
                   horizon=horizon, n_train=len(train), n_test=len(test))
    return rows


# ------------------------------------------------------------------ models
EVAL_CHUNK = 16   # test sequences per model call: bounds the memory of K-sample passes


def chunked(fn, batch, *rest):
    """Concatenate ``fn(batch[i:j], *rest[i:j])`` over chunks of EVAL_CHUNK sequences;
    ``fn`` returns a Prediction (mean, std) or a (B,) tensor."""
    outs = [fn(batch.index(slice(i, i + EVAL_CHUNK)), *(r[i:i + EVAL_CHUNK] for r in rest))
            for i in range(0, batch.batch_size, EVAL_CHUNK)]
    if isinstance(outs[0], torch.Tensor):
        return torch.cat(outs)
    return torch.cat([o.mean for o in outs]), torch.cat([o.std for o in outs])


@torch.no_grad()
def model_imputation(model, setup, binary: bool) -> dict:
    test = setup.test
    batch = test.to_batch(dtype=torch.float64)
    hidden = torch.as_tensor(hidden_entries(test, HIDE_SEED))
    pred_mean, pred_std = chunked(model.reconstruct, batch.with_mask(batch.mask & ~hidden))
    std = setup.standardizer
    mean = std.inverse_mean(pred_mean.double()).numpy()
    spread = std.inverse_std(pred_std.double()).numpy()
    x = std.inverse_mean(batch.x.double()).numpy()
    x = np.round(x) if binary else x
    h = hidden.numpy()
    return {"imputation_" + k: v for k, v in qb.scores(x[h], mean[h], spread[h],
                                                         binary).items()}


@torch.no_grad()
def model_forecasts(model, setup, binary: bool, horizon: int) -> dict:
    past, future = split_history(setup.test, horizon)
    t_future = torch.tensor(np.stack([f[0] for f in future]), dtype=torch.float64)
    pred_mean, pred_std = chunked(model.forecast, past.to_batch(dtype=torch.float64),
                                  t_future)
    std = setup.standardizer
    mean = std.inverse_mean(pred_mean.double()).numpy()
    spread = std.inverse_std(pred_std.double()).numpy()
    y = std.inverse_mean(np.stack([f[1] for f in future]))
    y = np.round(y) if binary else y
    seen = ~np.isnan(y)
    return {"forecast_" + k: v for k, v in qb.scores(y[seen], mean[seen], spread[seen],
                                                       binary).items()}


@torch.no_grad()
def iwae_per_step(model, test, standardizer) -> float:
    """The importance-weighted bound (K = IWAE_K) of the test sequences on the original
    scale (the standardisation's Jacobian, -sum of log std over the scored entries,
    included) per time step, as dynvae.train.evaluation.likelihood_metrics computes it."""
    batch = test.to_batch(dtype=torch.float64)
    bound = chunked(lambda b: model.log_likelihood_bound(b, IWAE_K), batch)
    log_scale = torch.as_tensor(np.log(standardizer.std), dtype=torch.float64)
    jacobian = (model.scored_mask(batch).double() * log_scale).sum()
    return float((bound.sum() - jacobian) / batch.lengths.sum())


def run_cell(dataset: str, name: str, budget: float, seed: int, threads: int,
             extra: tuple[str, ...] = (), fit_extra: tuple[str, ...] = ()) -> dict:
    """Train model ``name`` on ``dataset`` for ``budget`` seconds as the command line
    does (``extra``: more --set items; ``fit_extra``: those of a self-fitting model,
    whose fit stops at the same max_seconds) and score it (runs in its own process)."""
    torch.set_num_threads(threads)
    load_start = os.getloadavg()[0]
    seed_everything(seed)
    gradient = "train" in fit_sections(model_class(name))
    sets = ([f"max_seconds={budget}", "progress=false", *extra] if gradient
            else [f"max_seconds={budget}", *fit_extra])
    setup = setup_run(name, sets, DATASETS[dataset], seed)
    model = setup.build_model()
    start = time.perf_counter()
    history = fit_model(model, name, setup.configs, setup.train, setup.val, None, "cpu")
    seconds = time.perf_counter() - start
    model.double().eval()
    binary = is_binary(setup.standardizer.inverse_transform(setup.train))
    test = setup.test
    horizon = default_horizon(test)
    row = {"dataset": dataset, "impl": name, "case": dataset, "seconds": seconds,
           "budget_seconds": budget, "steps": len(history), "horizon": horizon,
           "n_train": len(setup.train), "n_test": len(test)}
    row.update(model_imputation(model, setup, binary))
    row.update(model_forecasts(model, setup, binary, horizon))
    row["test_iwae_per_step"] = iwae_per_step(model, test, setup.standardizer)
    row["load_average"] = [load_start, os.getloadavg()[0]]
    return row


# ------------------------------------------------------------------ report
COLUMNS = [("steps", "steps", "{:.0f}"), ("imputation_mse", "imp. MSE", "{:.4g}"),
           ("imputation_nll", "imp. NLL", "{:.3f}"), ("forecast_mse", "fc. MSE", "{:.4g}"),
           ("forecast_crps", "fc. CRPS", "{:.4g}"), ("forecast_coverage90", "fc. cov. 90%",
                                                     "{:.2f}"),
           ("test_iwae_per_step", "test IWAE / step", "{:.2f}")]


def best_baseline_mse(rows: list[dict], dataset: str) -> float:
    return min(r["imputation_mse"] for r in rows if r["dataset"] == dataset
               and r["impl"].startswith("baseline") and "imputation_mse" in r)


def markdown(rows: list[dict], command: str, budget: float) -> str:
    def cell(row, key, fmt):
        v = row.get(key)
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)
    lines = ["| dataset | impl | " + " | ".join(c[1] for c in COLUMNS) +
             " | imputation beats every baseline |",
             "|---|---|" + "---:|" * len(COLUMNS) + ":---:|"]
    wins = total = 0
    per_dataset = []
    for dataset in DATASETS:
        mine = [r for r in rows if r["dataset"] == dataset]
        if not mine:
            continue
        best = best_baseline_mse(rows, dataset)
        wins_before, total_before = wins, total
        for r in sorted(mine, key=lambda r: (not r["impl"].startswith("baseline"),
                                             r["impl"])):
            beat = ""
            if not r["impl"].startswith("baseline") and r["impl"] != "lgssm":
                total += 1
                ok = r.get("imputation_mse", math.inf) < best
                wins += ok
                beat = "yes" if ok else "no"
            if "error" in r:
                beat = f"{beat} ({r['error']})".strip()
            lines.append(f"| {r['case']} | {r['impl']} | " + " | ".join(
                cell(r, k, f) for k, _, f in COLUMNS) + f" | {beat} |")
        per_dataset.append(f"| {dataset} | {best:.4g} | {wins - wins_before} of "
                           f"{total - total_before} |")
    loads = [v for r in rows for v in r.get("load_average", [])]
    head = [
        f"# Model quality on real data, {budget:g} s per training run", "",
        f"Measured on {datetime.date.today().isoformat()} with", "", "```bash", command,
        "```", "",
        f"Every model trained as `dynvae train --set max_seconds={budget:g}` trains it "
        "(defaults otherwise), one torch thread per run, on the shared 2-core CPU machine "
        f"(1-minute load average during the runs: {min(loads, default=0):.1f} to "
        f"{max(loads, default=0):.1f}). Scores on the test sequences, original scale: "
        f"imputation of {HIDE_FRACTION:.0%} of the observed entries hidden at random "
        "(fixed seed); forecasts of each test sequence's final H steps (H as `dynvae "
        "train` chooses it: 10 % of the shortest sequence, 1 to 10); test IWAE bound "
        f"per time step with K = {IWAE_K} (for the `mean` baseline: independent "
        "per-feature Gaussians, Bernoullis on binary data). Binary data: NLL is the "
        "Bernoulli cross-entropy of the predicted probability, CRPS the Brier score. "
        "Baselines' spreads are calibrated on the training data "
        "(benchmarks/quality_baselines.py).", "",
        f"Deep models whose imputation MSE beats every baseline's: **{wins} of {total}**.",
        "", "| dataset | best baseline imp. MSE | deep models below it |", "|---|---:|---:|",
        *per_dataset, ""]
    return "\n".join(head + lines) + "\n"


def _cell_process(conn, args: tuple) -> None:
    try:
        conn.send(run_cell(*args))
    except Exception as err:          # reported in the row, the other cells go on
        conn.send({"error": f"{type(err).__name__}: {err}"})
    conn.close()


def run_cells(cells: list[tuple], jobs: int, cap: float, on_row=None) -> list[dict]:
    """run_cell(*args) for each args of ``cells``, ``jobs`` processes at a time; a cell
    still running after ``cap`` seconds is stopped and reported as not finished.
    ``on_row(rows so far)`` is called after every cell."""
    ctx = get_context("spawn")
    pending, running, rows = list(cells), [], []
    while pending or running:
        while pending and len(running) < jobs:
            args = pending.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_cell_process, args=(child, args), daemon=True)
            proc.start()
            running.append((proc, parent, args, time.monotonic()))
        time.sleep(1.0)
        for item in list(running):
            proc, conn, args, start = item
            row = None
            if conn.poll():
                try:
                    row = conn.recv()
                except EOFError:             # the process ended (was killed) mid-run
                    row = {"error": f"the process ended with exit code {proc.exitcode}"}
            elif time.monotonic() - start > cap:
                proc.terminate()
                row = {"error": f"not finished within {cap:.0f} s"}
            elif not proc.is_alive():
                row = {"error": f"the process ended with exit code {proc.exitcode}"}
            if row is None:
                continue
            proc.join()
            running.remove(item)
            base = {"dataset": args[0], "impl": args[1], "case": args[0],
                    "budget_seconds": args[2]}
            rows.append({**base, **row})
            report(rows[-1])
            if on_row is not None:
                on_row(rows)
    return rows


def report(row: dict) -> None:
    if "error" in row:
        print(f"{row['dataset']:<16} {row['impl']:<12} {row['error']}", flush=True)
        return
    print(f"{row['dataset']:<16} {row['impl']:<12} steps {row['steps']:>6}  imputation MSE "
          f"{row['imputation_mse']:.4g}", flush=True)


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    key = lambda r: (r["dataset"], r["impl"], r.get("budget_seconds"))
    replaced = {key(r) for r in new}
    return [r for r in old if key(r) not in replaced] + new


def written_notes(path: Path) -> str:
    """The sections written by hand below the generated table of an existing results
    file (from its first level-2 heading on), kept when the table is regenerated."""
    if not path.is_file():
        return ""
    text = path.read_text()
    start = text.find("\n## ")
    return "" if start < 0 else text[start:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 s per training run")
    parser.add_argument("--budget-seconds", type=float, default=300.0)
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated registry names (default: all)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit-set", action="append", default=[], metavar="KEY=VALUE",
                        help="more fit options of self-fitting models (the LGSSM), whose "
                        "fit stops at the same time budget (FitConfig.max_seconds)")
    parser.add_argument("--set", dest="train_set", action="append", default=[],
                        metavar="KEY=VALUE", help="more --set items of the gradient-trained "
                        "models (as `dynvae train --set`), for experiments; the table "
                        "states them")
    parser.add_argument("--cap-seconds", type=float, default=None,
                        help="wall-clock limit of one cell, training and scoring "
                        "(default: 3 x budget + 600 s)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/quality.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs/results/quality.md")
    args = parser.parse_args(argv)
    budget = 30.0 if args.quick else args.budget_seconds
    models = [m for m in args.models.split(",") if m]
    datasets = [d for d in args.datasets.split(",") if d]
    for name in models:
        model_class(name)
    unknown = sorted(set(datasets) - set(DATASETS))
    if unknown:
        parser.error(f"unknown datasets {unknown}; choose from {sorted(DATASETS)}")
    rows = []
    for dataset in datasets:
        rows += [dict(r, budget_seconds=budget) for r in baseline_rows(dataset, args.seed)]
    fit_extra = tuple(args.fit_set)
    cells = [(d, m, budget, args.seed, args.threads, tuple(args.train_set), fit_extra)
             for d in datasets for m in models]
    old = json.loads(args.json.read_text()) if args.json.is_file() else []
    command = "python benchmarks/quality.py " + " ".join(argv if argv is not None
                                                         else sys.argv[1:])

    notes = written_notes(args.markdown)

    def save(new_rows: list[dict]) -> None:      # after every cell: nothing measured is lost
        # read the file again: another run of this script may have added rows meanwhile
        on_disk = json.loads(args.json.read_text()) if args.json.is_file() else old
        merged = merge(on_disk, rows + new_rows)
        atomic_write_json(args.json, merged)
        atomic_write_text(args.markdown, markdown(
            [r for r in merged if r.get("budget_seconds") == budget], command.strip(),
            budget) + notes)

    cap = args.cap_seconds if args.cap_seconds is not None else 3 * budget + 600
    run_cells(cells, args.jobs, cap=cap, on_row=save)
    print(f"wrote {args.json} and {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
