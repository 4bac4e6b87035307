"""dynvae vs torchsde: fixed-step neural SDE solves, forward and forward+backward.

Same SDE modules (MLP drift, diagonal MLP diffusion), same steps, same batch, same
process. Prints steps/s and the speedup of dynvae over the faster of two torchsde
calls (its default, and one given a Brownian interval that knows the step size), and
the time of the networks alone (drift and diffusion evaluated once per step, no
solver): torchsde's time over that row bounds what any eager solver can gain. For
Milstein, ``networks+dg`` also evaluates the diffusion's closed-form derivative and the
correction term once per step: the arithmetic of a Milstein step without a solver.
``--json PATH`` writes one row per (case, impl). The accuracy column ``max_abs_diff`` compares both
libraries on one shared Brownian path (outside the timed runs).

    python benchmarks/sde.py --quick --json sde.json

``--memory`` instead times one training step (forward + backward of a mean-square loss)
against the number of solver steps and records its peak memory, each row in a fresh
process: backprop through the solver, checkpointed blocks, the adjoint, and torchsde's
adjoint on the same networks. ``peak_rss_mib`` is the growth of the process's peak
resident memory during the step; ``graph_mib`` the bytes autograd saved for backward.

    python benchmarks/sde.py --memory --quick --json sde_memory.json

A row whose memory or time, extrapolated linearly from the same implementation's
longest shorter row in the run, exceeds ``--max-row-mib`` or ``--max-row-seconds`` is
not run; the reason, with the per-step figure it came from, is printed and written to
``PATH_skipped.json`` beside ``--json PATH``.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from dynvae.nn.diffusion import tanh_layer, tanh_layer_and_slope  # noqa: E402
from dynvae.sde import (  # noqa: E402
    SDE,
    Adjoint,
    Backprop,
    BrownianPath,
    CheckpointedBlocks,
    EulerMaruyama,
    Milstein,
    NoiseType,
    sdeint,
)
from dynvae.sde.solvers import Compiled  # noqa: E402
from dynvae.utils import atomic_write_json  # noqa: E402


class NeuralSDE(nn.Module):
    """dz = f(z) dt + g(z) dW with an MLP drift and a per-coordinate MLP diffusion."""

    def __init__(self, z_dim: int, hidden: int):
        super().__init__()
        self.f_net = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, z_dim))
        # Diagonal noise: g_i depends on z_i only (grouped 1 -> 16 -> 1 nets).
        self.g_in = nn.Parameter(torch.randn(z_dim, 16) * 0.5)
        self.g_b = nn.Parameter(torch.zeros(z_dim, 16))
        self.g_out = nn.Parameter(torch.randn(z_dim, 16) * 0.1)

    def drift(self, t, z):
        return self.f_net(z)

    def diffusion(self, t, z):
        # sigmoid(sum_k g_out_k tanh(g_in_k z + g_b_k)) per coordinate, in the layout
        # that vectorises the sum over the 16 units (dynvae.nn.diffusion.tanh_layer)
        return torch.sigmoid(tanh_layer(z, self.g_in, self.g_b, self.g_out))  # (B, Z)

    def diffusion_and_derivative(self, t, z):
        """g and dg_i/dz_i in one pass: sigma'(a) sum_k g_out_k (1 - h_k^2) g_in_k, the
        tanh layer and its slope fused (dynvae.nn.diffusion.tanh_layer_and_slope)."""
        a, slope = tanh_layer_and_slope(z, self.g_in, self.g_b, self.g_out)
        g = torch.sigmoid(a)
        return g, g * (1 - g) * slope


class DynvaeNeuralSDE(SDE):
    noise = NoiseType.DIAGONAL

    def __init__(self, net: NeuralSDE):
        self.net = net

    def drift(self, t, z):
        return self.net.drift(t, z)

    def diffusion(self, t, z):
        return self.net.diffusion(t, z)

    def diffusion_and_derivative(self, t, z):
        return self.net.diffusion_and_derivative(t, z)


class AutogradDerivativeSDE(DynvaeNeuralSDE):
    """The same SDE without its closed-form derivative: Milstein's g dg/dz by autograd."""

    def diffusion_and_derivative(self, t, z):
        return None


class TorchsdeNeuralSDE(nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, net: NeuralSDE):
        super().__init__()
        self.net = net

    def f(self, t, y):
        return self.net.drift(t, y)

    def g(self, t, y):
        return self.net.diffusion(t, y)


def retain_freed_memory() -> None:
    """Ask glibc to keep freed memory in the process: no trimming of the heap's top and
    no mmap for blocks under 256 MiB, so a buffer freed by one step is reused by the next
    without page faults. The same as MALLOC_TRIM_THRESHOLD_=2147483647
    MALLOC_MMAP_THRESHOLD_=268435456 in the environment."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        raise SystemExit("--malloc retain needs glibc's mallopt")
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (libc.mallopt(m_trim_threshold, 2 ** 31 - 1)
            and libc.mallopt(m_mmap_threshold, 256 * 2 ** 20)):
        raise SystemExit("mallopt refused the --malloc retain settings")


def _time_interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, runs alternating so load changes hit all alike."""
    for fn in fns.values():
        fn()  # warm-up (and compilation)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}


def _runner(solve, net, z0, backward: bool):
    def run():
        if backward:
            net.zero_grad(set_to_none=True)
            solve().pow(2).mean().backward()
        else:
            with torch.no_grad():
                solve()
    return run


def _max_abs_diff(torchsde, net, solver, method, z0, ts, dt):
    """Both libraries in float64 on one shared Brownian path."""
    from tests.reference.sde_oracles import torchsde_brownian

    net = copy.deepcopy(net).double()
    ours_sde, theirs_sde = DynvaeNeuralSDE(net), TorchsdeNeuralSDE(net)
    bm = BrownianPath(0.0, float(ts[-1]), tuple(z0.shape), dtype=z0.dtype, seed=0)
    with torch.no_grad():
        a = sdeint(ours_sde, z0, ts, solver=solver, dt=dt, bm=bm).z
        b = torchsde.sdeint(theirs_sde, z0, ts, method=method, dt=dt, bm=torchsde_brownian(bm))
    return float((a - b.transpose(0, 1)).abs().max())


def run_case(torchsde, z_dim, solver, method, backward, args):
    torch.manual_seed(0)
    net = NeuralSDE(z_dim, args.hidden)
    ours_sde, theirs_sde = DynvaeNeuralSDE(net), TorchsdeNeuralSDE(net)
    z0 = torch.randn(args.batch, z_dim)
    ts = torch.linspace(0, args.steps * args.dt, args.n_obs)
    fns = {"dynvae": _runner(lambda: sdeint(ours_sde, z0, ts, solver=solver, dt=args.dt).z,
                             net, z0, backward)}
    if method == "milstein":     # the correction by autograd instead of in closed form
        autograd_sde = AutogradDerivativeSDE(net)
        fns["dynvae-autograd-dg"] = _runner(
            lambda: sdeint(autograd_sde, z0, ts, solver=solver, dt=args.dt).z, net, z0,
            backward)
    if args.compile:
        compiled = Compiled(solver, steps_per_graph=args.steps_per_graph)
        fns["dynvae-compiled"] = _runner(
            lambda: sdeint(ours_sde, z0, ts, solver=compiled, dt=args.dt).z, net, z0, backward)
    # The networks alone: `steps` drift and diffusion evaluations (and their backward)
    # with no solver around them, the arithmetic every fixed-step solver pays in eager.
    dW = torch.randn(args.steps, *z0.shape) * args.dt ** 0.5

    def networks_only():
        z = z0.detach().requires_grad_(backward)  # backward also reaches the state
        out = z0.new_zeros(())
        for i in range(args.steps):
            out = out + (net.drift(None, z) * args.dt + net.diffusion(None, z) * dW[i]).sum()
        return out
    fns["networks-only"] = _runner(networks_only, net, z0, backward)

    # The Brownian increments alone, drawn as plainly as torch allows (one randn over all
    # steps, scaled in place): noise the floor above is handed and every solver draws.
    def noise_only():
        return torch.randn(args.steps, *z0.shape).mul_(args.dt ** 0.5)
    fns["noise-only"] = noise_only
    if method == "milstein":
        # The same with the diffusion's derivative in closed form and the correction term
        # (no solver): what Milstein's arithmetic costs before any solver overhead.
        def networks_and_derivative():
            z = z0.detach().requires_grad_(backward)
            out = z0.new_zeros(())
            for i in range(args.steps):
                g, dg = net.diffusion_and_derivative(None, z)
                out = out + (net.drift(None, z) * args.dt + g * dW[i]
                             + 0.5 * g * dg * (dW[i] * dW[i] - args.dt)).sum()
            return out
        fns["networks+dg"] = _runner(networks_and_derivative, net, z0, backward)
    if torchsde is not None:
        # Default call (the Brownian interval it builds knows no step size) and the tuned
        # call with a Brownian interval told the step size, as torchsde recommends.
        fns["torchsde"] = _runner(lambda: torchsde.sdeint(theirs_sde, z0, ts, method=method,
                                                          dt=args.dt), net, z0, backward)

        def tuned():
            bm = torchsde.BrownianInterval(t0=float(ts[0]), t1=float(ts[-1]), size=z0.shape,
                                           dtype=z0.dtype, device=z0.device, dt=args.dt)
            return torchsde.sdeint(theirs_sde, z0, ts, method=method, dt=args.dt, bm=bm)
        fns["torchsde-bm-dt"] = _runner(tuned, net, z0, backward)
    seconds = _time_interleaved(fns, args.repeats)
    case = f"{method}_z{z_dim}_{'fwd+bwd' if backward else 'fwd'}"
    diff = None
    if torchsde is not None and not backward:
        diff = _max_abs_diff(torchsde, net, solver, method, z0.double(),
                             torch.linspace(0, args.steps * args.dt, args.n_obs,
                                            dtype=torch.float64), args.dt)
    rows = []
    for impl, sec in seconds.items():
        row = {"case": case, "impl": impl, "seconds": sec, "batch": args.batch, "z_dim": z_dim,
               "steps": args.steps, "steps_per_s": args.steps / sec,
               "max_abs_diff_float64": diff,
               "over_networks_only": sec / seconds["networks-only"],
               "over_networks_and_noise": sec / (seconds["networks-only"]
                                                 + seconds["noise-only"])}
        if torchsde is not None:  # against the faster torchsde call
            row["speedup_vs_torchsde"] = min(seconds["torchsde"],
                                             seconds["torchsde-bm-dt"]) / sec
            row["speedup_vs_torchsde_default"] = seconds["torchsde"] / sec
        rows.append(row)
    return rows


def _format_row(r: dict) -> str:
    sp = f"{r['speedup_vs_torchsde']:.2f}x" if "speedup_vs_torchsde" in r else ""
    sp = "" if r["impl"].startswith(("torchsde", "networks", "noise")) else sp
    diff = r.get("max_abs_diff_float64")
    d = f"{diff:.1e}" if diff is not None and r["impl"] != "noise-only" else ""
    floor = "" if r["impl"] == "networks-only" else f"{r['over_networks_only']:.2f}x"
    with_noise = ("" if r["impl"].startswith(("networks", "noise"))
                  else f"{r['over_networks_and_noise']:.2f}x")
    return (f"{r['case']:<22}{r['impl']:<19}{r['seconds']:>10.4f}{r['steps_per_s']:>10.0f}"
            f"{sp:>9}{floor:>9}{with_noise:>9}{d:>11}")


MEMORY_IMPLS = ("backprop", "checkpoint-64", "adjoint", "torchsde-adjoint")


def memory_row(impl: str, steps: int, batch: int, z_dim: int, hidden: int) -> dict:
    """One training step of ``impl`` over ``steps`` Euler steps (run in a fresh process,
    after a warm-up step of 8 steps that pays the one-time costs at little memory)."""
    if steps > 8:
        _one_step(impl, 8, batch, z_dim, hidden)
    return _one_step(impl, steps, batch, z_dim, hidden)


def _one_step(impl: str, steps: int, batch: int, z_dim: int, hidden: int) -> dict:
    torch.manual_seed(0)
    net = NeuralSDE(z_dim, hidden)
    z0 = torch.randn(batch, z_dim)
    dt = 1.0 / steps
    ts = torch.linspace(0, 1, 11)
    if impl == "torchsde-adjoint":
        import torchsde
        theirs = TorchsdeNeuralSDE(net)

        def solve():
            return torchsde.sdeint_adjoint(theirs, z0, ts, method="euler", dt=dt,
                                           adjoint_method="euler",
                                           adjoint_params=tuple(net.parameters()))
    else:
        gradients = {"backprop": Backprop(), "checkpoint-64": CheckpointedBlocks(64),
                     "adjoint": Adjoint(tuple(net.parameters()))}[impl]
        ours = DynvaeNeuralSDE(net)

        def solve():
            return sdeint(ours, z0, ts, EulerMaruyama(), dt, gradients=gradients).z
    saved = [0]

    def pack(x):
        saved[0] += x.numel() * x.element_size()
        return x
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss = solve().pow(2).mean()
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before   # KiB on Linux
    return {"case": f"train-step_z{z_dim}_steps{steps}", "impl": impl, "seconds": seconds,
            "steps": steps, "batch": batch, "z_dim": z_dim, "peak_rss_mib": peak / 1024,
            "graph_mib": saved[0] / 2 ** 20}


def over_budget(rows: list[dict], impl: str, steps: int, max_mib: float,
                max_seconds: float) -> str | None:
    """Why ``impl`` at ``steps`` is not run, or None. Predicted from the longest row of
    the same impl measured earlier in this run, scaled linearly in the steps: its peak
    memory (an upper bound for the adjoint, whose memory is flat) and its time."""
    done = [r for r in rows if r["impl"] == impl and r["steps"] < steps]
    if not done:
        return None
    ref = max(done, key=lambda r: r["steps"])
    scale = steps / ref["steps"]
    mib = max(ref["peak_rss_mib"], ref["graph_mib"]) * scale
    seconds = ref["seconds"] * scale
    per_step = f"{max(ref['peak_rss_mib'], ref['graph_mib']) / ref['steps']:.3f} MiB"
    if mib > max_mib:
        return (f"predicted {mib:,.0f} MiB ({per_step} per step at {ref['steps']} steps) "
                f"> --max-row-mib {max_mib:,.0f}")
    if seconds > max_seconds:
        return (f"predicted {seconds:,.0f} s ({ref['seconds']:.2f} s at {ref['steps']} "
                f"steps) > --max-row-seconds {max_seconds:,.0f}")
    return None


def memory_rows(args) -> list[dict]:
    """memory_row for every impl and length, each in its own process."""
    impls = args.impls
    try:
        import torchsde  # noqa: F401
    except ImportError:
        impls = [i for i in impls if i != "torchsde-adjoint"]
        print("torchsde is not installed: skipping its adjoint")
    print(f"batch {args.batch}, z {args.z_dims[0]}, hidden {args.hidden}, threads "
          f"{args.threads}, float32, Euler, one training step")
    print(f"{'steps':>8} {'impl':<18}{'seconds':>9}{'peak MiB':>10}{'graph MiB':>11}")
    rows, skipped = [], []
    for steps in sorted(args.lengths):
        for impl in impls:
            reason = over_budget(rows, impl, steps, args.max_row_mib, args.max_row_seconds)
            if reason is not None:
                skipped.append({"steps": steps, "impl": impl, "reason": reason})
                print(f"{steps:>8} {impl:<18}skipped: {reason}", flush=True)
                continue
            cmd = [sys.executable, __file__, "--memory-row", impl, str(steps),
                   "--batch", str(args.batch), "--hidden", str(args.hidden),
                   "--threads", str(args.threads), "--z-dims", str(args.z_dims[0])]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            print(f"{steps:>8} {impl:<18}{row['seconds']:>9.2f}{row['peak_rss_mib']:>10.1f}"
                  f"{row['graph_mib']:>11.2f}", flush=True)
    args.skipped = skipped
    by = {(r["steps"], r["impl"]): r for r in rows}
    for steps in args.lengths:
        if (steps, "torchsde-adjoint") in by and (steps, "adjoint") in by:
            ratio = by[steps, "torchsde-adjoint"]["seconds"] / by[steps, "adjoint"]["seconds"]
            print(f"{steps:>8} torchsde-adjoint / adjoint time: {ratio:.2f}x")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats (< 1 min)")
    p.add_argument("--json", type=Path, default=None, help="write result rows to this file")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--steps", type=int, default=None, help="solver steps (default 200; 20 quick)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5; 3 quick)")
    p.add_argument("--steps-per-graph", type=int, default=8,
                   help="steps traced into one graph by the compiled solver (default 8)")
    p.add_argument("--z-dims", type=int, nargs="+", default=[4, 64],
                   help="state dimensions to run (default 4 64)")
    p.add_argument("--methods", nargs="+", default=["euler", "milstein"],
                   choices=["euler", "milstein"], help="solvers to time (default: both)")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="skip the torch.compile rows (always skipped with --quick)")
    p.add_argument("--malloc", choices=["system", "retain"], default="system",
                   help="system: glibc's defaults; retain: keep freed memory in the process "
                        "(no page faults from re-touching returned memory; see "
                        "docs/sde.md, section 9)")
    p.add_argument("--memory", action="store_true",
                   help="peak memory and time of a training step vs solver steps")
    p.add_argument("--lengths", type=int, nargs="+", default=None,
                   help="solver steps for --memory (default 100 1000 10000 100000; "
                        "quick 100 400 1600)")
    p.add_argument("--impls", nargs="+", default=list(MEMORY_IMPLS), choices=MEMORY_IMPLS,
                   help="implementations for --memory (default all)")
    p.add_argument("--max-row-mib", type=float, default=4096,
                   help="--memory: skip a row whose memory, predicted linearly from the "
                        "same impl's longest shorter row, exceeds this (default 4096)")
    p.add_argument("--max-row-seconds", type=float, default=900,
                   help="--memory: the same for its time (default 900)")
    p.add_argument("--memory-row", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.malloc == "retain":
        retain_freed_memory()
    torch.set_num_threads(args.threads)
    if args.memory_row is not None:
        row = memory_row(args.memory_row[0], int(args.memory_row[1]), args.batch,
                         args.z_dims[0], args.hidden)
        print(json.dumps(row))
        return [row]
    if args.memory:
        if args.lengths is None:
            args.lengths = [100, 400, 1600] if args.quick else [100, 1000, 10000, 100000]
        if args.quick and args.batch == 1024:
            args.batch = 256
        rows = memory_rows(args)
        if args.json is not None:
            atomic_write_json(args.json, rows)
            if args.skipped:
                skipped_path = args.json.with_name(args.json.stem + "_skipped.json")
                atomic_write_json(skipped_path, args.skipped)
        return rows
    if args.quick and args.compile:
        args.compile = False
        print("--quick: skipping the dynvae-compiled rows (compilation takes ~15 s a graph)")
    torch.set_num_threads(args.threads)
    steps, repeats = (20, 3) if args.quick else (200, 5)
    args.steps = args.steps or steps
    args.repeats = args.repeats or repeats
    args.dt, args.n_obs = 0.01, 11
    try:
        import torchsde
    except ImportError:
        torchsde = None
        print("torchsde is not installed: timing dynvae only")
    print(f"batch {args.batch}, {args.steps} steps, hidden {args.hidden}, "
          f"threads {args.threads}, float32, malloc {args.malloc}")
    print(f"{'case':<22}{'impl':<19}{'seconds':>10}{'steps/s':>10}{'speedup':>9}"
          f"{'/floor':>9}{'/f+noise':>9}{'max|diff|':>11}")
    rows = []
    for z_dim in args.z_dims:
        for solver, method in ((EulerMaruyama(), "euler"), (Milstein(), "milstein")):
            if method not in args.methods:
                continue
            for backward in (False, True):
                case_rows = run_case(torchsde, z_dim, solver, method, backward, args)
                for r in case_rows:
                    print(_format_row(r), flush=True)
                rows += case_rows
    if args.json is not None:
        atomic_write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
