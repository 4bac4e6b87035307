"""Latent SDE on long sequences: time and peak memory of one ELBO gradient, backprop
through the solver vs the adjoint, against the number of observation times.

Batch of 4 sequences with their own irregular times (gaps 0.005-0.015), 3 observed
dimensions, the default LatentSDEConfig with dt = 0.005 (about two solver steps per
observation interval), one posterior sample. Each row runs in a fresh process after a
warm-up on 50 observation times; ``peak_rss_mib`` is the growth of the process's peak
resident memory during the gradient, ``cpu_seconds`` its CPU time (one thread).

    python benchmarks/latent_sde_long.py --quick --json latent_long.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from dynvae.data.batch import SequenceBatch  # noqa: E402
from dynvae.models.latent_sde import LatentSDE, LatentSDEConfig  # noqa: E402
from dynvae.utils import atomic_write_json  # noqa: E402

IMPLS = ("backprop", "adjoint")


def _batch(T: int, B: int = 4, D: int = 3) -> SequenceBatch:
    t = torch.cumsum(0.005 + 0.01 * torch.rand(B, T), 1)                  # (B, T)
    x = torch.sin(t)[..., None].expand(B, T, D) + 0.1 * torch.randn(B, T, D)
    return SequenceBatch(x, torch.ones(B, T, D, dtype=torch.bool), t, torch.full((B,), T))


def row(impl: str, T: int) -> dict:
    """One ELBO gradient of ``impl`` at T observation times (in a fresh process)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    batch, small = _batch(T), _batch(50)
    model = LatentSDE(LatentSDEConfig(gradients=impl, dt=0.005), 3)
    model.elbo(small, 1).loss().backward()                                   # warm-up
    model.zero_grad()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu, start = time.process_time(), time.perf_counter()
    model.elbo(batch, 1).loss().backward()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return {"case": f"latent-sde-elbo-grad_T{T}", "impl": impl, "seconds": seconds,
            "cpu_seconds": cpu, "peak_rss_mib": peak, "T": T, "batch": 4}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1,000 observation times only")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--lengths", type=int, nargs="+", default=None,
                   help="observation times (default 2000 10000; quick 1000)")
    p.add_argument("--row", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.row is not None:
        print(json.dumps(row(args.row[0], int(args.row[1]))))
        return None
    lengths = args.lengths or ([1000] if args.quick else [2000, 10000])
    print(f"{'T':>7} {'impl':<10}{'seconds':>9}{'cpu s':>8}{'peak MiB':>10}")
    rows = []
    for T in lengths:
        for impl in IMPLS:
            out = subprocess.run([sys.executable, __file__, "--row", impl, str(T)],
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            rows.append(r)
            print(f"{T:>7} {impl:<10}{r['seconds']:>9.2f}{r['cpu_seconds']:>8.2f}"
                  f"{r['peak_rss_mib']:>10.1f}", flush=True)
        a, b = rows[-1], rows[-2]
        print(f"{T:>7} adjoint / backprop: CPU {a['cpu_seconds'] / b['cpu_seconds']:.2f}x, "
              f"peak memory {a['peak_rss_mib'] / b['peak_rss_mib']:.2f}x")
    if args.json is not None:
        atomic_write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
