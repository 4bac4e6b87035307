"""Start-up time of the ``dynvae`` command line: wall-clock seconds of whole processes.

Every case is a fresh ``python -m dynvae ...`` process, run ``--repeats`` times after
one warm-up run, the cases interleaved within each repeat so that all of them see the
same machine load; the table gives median, minimum and maximum. Next to dynvae:

- ``python -c pass``: the interpreter's own start-up, the floor of any command;
- ``import torch``: the floor of every command that runs a model;
- ``eager imports``: ``import torch, pandas, matplotlib.pyplot`` and the dynvae modules,
  which every command paid before the command line imported lazily;
- with ``--baseline-src PATH``: the same commands run from another source tree (e.g. a
  checkout of an older revision), for a before/after ratio.

The commands on a run (evaluate, impute, forecast, sample) work on a local level model
of the Nile series trained once beforehand (not timed).

    python benchmarks/cli_startup.py --quick --json cli.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
EAGER = ("import torch, pandas, matplotlib.pyplot; import dynvae.train.run, "
         "dynvae.train.evaluation")

# case -> argv after `python -m dynvae` (None: a plain python command, see FLOORS)
CASES: dict[str, list[str]] = {
    "--help": ["--help"],
    "datasets": ["datasets"],
    "usage error (train without --model)": ["train"],
    "train --help": ["train", "--help"],
    "evaluate nile run": ["evaluate", "{run}"],
    "impute nile run": ["impute", "{run}", "--data", "{csv}", "--out", "{tmp}/imputed.csv"],
    "forecast nile run": ["forecast", "{run}", "--data", "{csv}", "--horizon", "10",
                          "--out", "{tmp}/forecast.csv"],
    "sample nile run": ["sample", "{run}", "-n", "5", "--steps", "50", "--out",
                        "{tmp}/draws.npy"],
}
FLOORS: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "python -c 'import torch'": ["-c", "import torch"],
    "eager imports": ["-c", EAGER],
}


def run_once(argv: list[str], src: Path, cwd: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(src), MPLBACKEND="Agg")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 2):          # 2: the usage error case, on purpose
        raise RuntimeError(f"{argv} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds


def prepare(tmp: Path, src: Path) -> dict[str, str]:
    """Export the Nile series and fit the run the commands use (not timed)."""
    csv, run = tmp / "nile.csv", tmp / "nile-run"
    for argv in (["datasets", "export", "nile", str(csv)],
                 ["train", "--model", "lgssm", "--data", str(csv), "--time-col", "year",
                  "--value-cols", "volume", "--out", str(run)]):
        run_once(["-m", "dynvae", *argv], src, tmp)
    return {"run": str(run), "csv": str(csv), "tmp": str(tmp)}


def measure(jobs: dict[tuple[str, str], tuple[list[str], Path]], repeats: int, cwd: Path
            ) -> dict[tuple[str, str], list[float]]:
    """Seconds of each job, ``repeats`` times, jobs interleaved, after one warm-up each."""
    for argv, src in jobs.values():
        run_once(argv, src, cwd)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in jobs}
    for _ in range(repeats):
        for key, (argv, src) in jobs.items():
            times[key].append(run_once(argv, src, cwd))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats (under a minute)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per case "
                        "(default 7, 3 with --quick)")
    parser.add_argument("--baseline-src", type=Path, default=None, help="another source "
                        "tree (its src/ folder) to time the same commands from")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        names = prepare(tmp, SRC)
        jobs: dict[tuple[str, str], tuple[list[str], Path]] = {}
        for case, argv in FLOORS.items():
            jobs[(case, "python")] = (argv, SRC)
        impls = [("dynvae", SRC)]
        if args.baseline_src is not None:
            impls.append(("baseline", args.baseline_src.resolve()))
        for case, argv in CASES.items():
            for impl, src in impls:
                filled = [a.format(**names) for a in argv]
                jobs[(case, impl)] = (["-m", "dynvae", *filled], src)
        times = measure(jobs, repeats, tmp)
    rows = [{"case": case, "impl": impl, "seconds": statistics.median(ts), "min": min(ts),
             "max": max(ts), "repeats": repeats} for (case, impl), ts in times.items()]
    eager = next(r["seconds"] for r in rows if r["case"] == "eager imports")
    print(f"{'case':38s} {'impl':9s} {'median s':>9s} {'min':>7s} {'max':>7s} "
          f"{'vs eager':>9s} {'vs baseline':>12s}")
    for row in rows:
        base = next((r["seconds"] for r in rows if r["case"] == row["case"]
                     and r["impl"] == "baseline"), None)
        row["ratio_eager"] = eager / row["seconds"]
        ratio = "" if base is None or row["impl"] != "dynvae" else f"{base / row['seconds']:.2f}x"
        if ratio:
            row["ratio_baseline"] = base / row["seconds"]
        print(f"{row['case']:38s} {row['impl']:9s} {row['seconds']:9.3f} {row['min']:7.3f} "
              f"{row['max']:7.3f} {row['ratio_eager']:8.2f}x {ratio:>12s}")
    if args.json is not None:
        sys.path.insert(0, str(SRC))
        from dynvae.utils import atomic_write_json
        atomic_write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
