"""Brownian motion queries: dynvae's BrownianPath and BrownianTree vs torchsde's
BrownianInterval, on the query patterns of a fixed-step solve.

Each row builds a fresh Brownian motion of shape (batch, W) on [0, 1] and asks it for
the increments and space-time Levy areas of an N-step grid:

* ``blocks``: consecutive blocks of steps, forward in time (what ``sdeint`` does with a
  user's ``bm``: one query per block of ``B * W * 2 <= 2^20`` numbers);
* ``steps``: one step at a time, forward (what torchsde's solvers do);
* ``reverse``: one step at a time, backward in time (an adjoint's backward pass).

torchsde's BrownianInterval (space-time Levy area, told the step size) is asked one
step at a time in every pattern, as its solvers ask it. Prints seconds per row
(median of ``--repeats``) and torchsde's time over dynvae's.

    python benchmarks/brownian.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]

from dynvae.sde import BrownianPath  # noqa: E402
from dynvae.sde.brownian_tree import BrownianTree  # noqa: E402
from dynvae.sde.noise import CHUNK_ELEMENTS  # noqa: E402
from dynvae.utils import atomic_write_json  # noqa: E402


def _queries(pattern: str, n_steps: int, block: int) -> list[tuple[int, int]]:
    if pattern == "blocks":
        return [(s, min(s + block, n_steps)) for s in range(0, n_steps, block)]
    steps = [(s, s + 1) for s in range(n_steps)]
    return steps[::-1] if pattern == "reverse" else steps


def _time_dynvae(make, grid, queries) -> float:
    bm = make()
    start = time.perf_counter()
    for a, b in queries:
        bm.increments(grid[a:b + 1])
    return time.perf_counter() - start


def _time_torchsde(torchsde, shape, dtype, grid, queries) -> float:
    dt = float(grid[1] - grid[0])
    bm = torchsde.BrownianInterval(0.0, 1.0, size=shape, dtype=dtype, entropy=0, dt=dt,
                                   levy_area_approximation="space-time")
    ts = grid.tolist()
    start = time.perf_counter()
    for a, b in queries:
        for k in range(a, b):
            bm(ts[k], ts[k + 1], return_U=True)
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--widths", type=int, nargs="+", default=[4, 64])
    parser.add_argument("--steps", type=int, nargs="+", default=None,
                        help="grid sizes (default 200 2000; quick 200)")
    parser.add_argument("--repeats", type=int, default=None, help="default 3; quick 1")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = parser.parse_args(argv)
    steps = args.steps or ([200] if args.quick else [200, 2000])
    repeats = args.repeats or (1 if args.quick else 3)
    torch.set_num_threads(args.threads)
    try:
        import torchsde
    except ImportError:
        torchsde = None
        print("torchsde is not installed (pip install -e '.[bench]'): its rows are skipped")
    dtype = torch.float32
    print(f"batch {args.batch}, float32, threads {args.threads}, median of {repeats}")
    print(f"{'W':>3} {'steps':>6} {'pattern':8} {'impl':22} {'seconds':>9} {'torchsde/x':>10}")
    rows = []
    for W in args.widths:
        shape = (args.batch, W)
        block = max(1, CHUNK_ELEMENTS // (args.batch * W * 2))
        for n in steps:
            grid = torch.linspace(0.0, 1.0, n + 1, dtype=dtype)
            for pattern in ("blocks", "steps", "reverse"):
                qs = _queries(pattern, n, block)
                impls = {
                    "dynvae-path": lambda shape=shape: BrownianPath(0.0, 1.0, shape,
                                                                    dtype=dtype, seed=0),
                    "dynvae-tree": lambda shape=shape, n=n: BrownianTree(
                        0.0, 1.0, shape, dtype=dtype, seed=0, tol=1.0 / (4 * n)),
                }
                times = {name: statistics.median(_time_dynvae(make, grid, qs)
                                                 for _ in range(repeats))
                         for name, make in impls.items()}
                if torchsde is not None:
                    times["torchsde-interval"] = statistics.median(
                        _time_torchsde(torchsde, shape, dtype, grid, qs) for _ in range(repeats))
                ref = times.get("torchsde-interval")
                for name, sec in times.items():
                    mine = ref is not None and not name.startswith("torchsde")
                    ratio = f"{ref / sec:9.2f}x" if mine else ""
                    label = f"{pattern}/{block}" if pattern == "blocks" else pattern
                    print(f"{W:>3} {n:>6} {label:8} {name:22} {sec:9.4f} {ratio:>10}", flush=True)
                    rows.append({"W": W, "steps": n, "pattern": pattern, "block": block,
                                 "impl": name, "seconds": sec,
                                 "torchsde_over": (ref / sec if ref is not None and
                                                   not name.startswith("torchsde") else None)})
    if args.json is not None:
        atomic_write_json(args.json, rows)


if __name__ == "__main__":
    main()
