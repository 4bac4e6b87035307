"""Faults of whole processes: kill -9 at random points then --resume, and two runs
started at once into one directory. Each starts several Python processes: slow."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dynvae.train.checkpoint import load_checkpoint
from tests.reliability.conftest import dkf_args
from tests.reliability.table import reliability

pytestmark = pytest.mark.slow
SRC = Path(__file__).resolve().parents[2] / "src"
STEPS = 24


def cli(args, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get(
        "PYTHONPATH", "")]), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.Popen([sys.executable, "-m", "dynvae", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def finish(proc, timeout=300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def steps_written(run: Path) -> int:
    """Training steps recorded in RUN/metrics.csv (written with every last.pt)."""
    curve = run / "metrics.csv"
    return max(0, len(curve.read_text().splitlines()) - 1) if curve.is_file() else 0


def kill_at(proc, run: Path, steps: int | None, delay: float) -> None:
    """kill -9 ``proc`` ``delay`` seconds after ``steps`` steps are on disk (None: after
    ``delay`` seconds from now), unless it ended first."""
    deadline = time.monotonic() + 300
    while steps is not None and steps_written(run) < steps and proc.poll() is None:
        if time.monotonic() > deadline:
            raise TimeoutError("the training run made no progress")
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()


@reliability("faults", [
    ("kill -9 at three random points (one during start-up, two at random delays after "
     "random training steps, checkpoints written every step), each followed by train "
     "--resume, or a plain rerun when no last.pt was written yet",
     "the final run equals an uninterrupted one exactly: same parameters, same loss at "
     "every step, same metrics.json (bar fit_seconds)")])
def test_kill_at_random_points_then_resume(sequences_csv, tmp_path):
    args = lambda out, *extra: dkf_args(sequences_csv, out, "--set", f"max_steps={STEPS}",
                                        *extra)
    assert finish(cli(args(tmp_path / "reference")))[0] == 0
    run = tmp_path / "run"
    rng = np.random.default_rng(20)
    plan = [(None, rng.uniform(0.5, 3.0))] + [(int(s), rng.uniform(0.0, 0.2)) for s in
                                                sorted(rng.integers(1, STEPS, 2))]
    kills = []
    for steps, delay in plan:
        resume = (run / "checkpoints" / "last.pt").is_file()
        kill_at(cli(args(run, *(["--resume"] if resume else []))), run, steps, delay)
        kills.append(steps_written(run))
    resume = ["--resume"] if (run / "checkpoints" / "last.pt").is_file() else []
    code, err = finish(cli(args(run, *resume)))
    assert code == 0, err
    assert kills != [STEPS] * len(kills), "every kill came after the run had ended"
    ref, got = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt")
                for d in ("reference", "run"))
    assert got["step"] == ref["step"] == STEPS
    assert all(torch.equal(ref["model"][k], got["model"][k]) for k in ref["model"])
    assert [r["loss"] for r in got["history"]] == [r["loss"] for r in ref["history"]]
    metrics = [json.loads((tmp_path / d / "metrics.json").read_text())
               for d in ("reference", "run")]
    for m in metrics:
        m.pop("fit_seconds")
    assert metrics[0] == metrics[1]
    assert not (run / ".dynvae.lock").exists()


@reliability("faults", [
    ("two train processes started at once into one new directory (different seeds)",
     "one exits 0, the other exits 2 with one line (directory being written by another "
     "process, or not empty once the first has finished); the run left is whole: its "
     "config.json names the winner's seed and evaluate reads it")])
def test_two_runs_into_one_directory(sequences_csv, tmp_path):
    run = tmp_path / "run"
    procs = [cli(dkf_args(sequences_csv, run, "--set", f"max_steps={STEPS}", "--seed",
                          str(seed))) for seed in (0, 1)]
    results = [finish(p) for p in procs]
    codes = [code for code, _ in results]
    assert sorted(codes) == [0, 2], results
    winner, loser = codes.index(0), codes.index(2)
    err = results[loser][1]
    assert err.count("\n") == 1 and err.startswith("dynvae train: error: "), err
    assert "being written by another dynvae process" in err or "is not empty" in err, err
    assert json.loads((run / "config.json").read_text())["seed"] == winner
    code, err = finish(cli(["evaluate", str(run)]))
    assert code == 0, err


@reliability("faults", [
    ("train --force into a directory while another train process is fitting into it",
     "the second exits 2 at once, naming the first's pid; the first finishes with exit 0 "
     "and its run is whole (its seed in config.json, evaluate reads it)")])
def test_a_forced_run_cannot_take_a_directory_in_use(sequences_csv, tmp_path):
    run = tmp_path / "run"
    first = cli(dkf_args(sequences_csv, run, "--set", "max_steps=1000000", "--set",
                         "max_seconds=30", "--set", "checkpoint_every=20", "--seed", "3"))
    deadline = time.monotonic() + 300
    while steps_written(run) < 1 and first.poll() is None:     # fitting, lock held
        assert time.monotonic() < deadline, "the first run made no progress"
        time.sleep(0.05)
    code, err = finish(cli(dkf_args(sequences_csv, run, "--set", "max_steps=2", "--force")))
    assert code == 2 and err.count("\n") == 1, err
    assert first.poll() is None, "the first run ended before the second was refused"
    assert f"being written by another dynvae process (pid {first.pid})" in err
    code, err = finish(first)
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["seed"] == 3
    assert finish(cli(["evaluate", str(run)]))[0] == 0
