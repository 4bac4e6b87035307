"""`dynvae train` launched by torchrun: two processes, one run directory."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_two_process_cli_training_writes_one_complete_run_directory(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--standalone", "-m", "dynvae", "train", "--model", "dkf",
           "--dataset", "healing-digits", "--dataset-option", "n_sequences=40",
           "--set", "max_steps=3", "--set", "eval_every=2", "--set", "progress=false",
           "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # messages once (rank 0 only), and DDP without find_unused_parameters' warning
    assert proc.stdout.count("using observation=bernoulli") == 1, proc.stdout
    assert proc.stdout.count("training data's log-likelihood") == 1
    assert "find_unused_parameters" not in proc.stderr
    for name in ("config.json", "metrics.json", "metrics.csv", "checkpoints/model.pt",
                 "checkpoints/last.pt"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_elbo_per_step"] < 0
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 1 + 3


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_two_process_cli_training_streams_a_shard_directory(tmp_path):
    import numpy as np

    from tests.data.shard_helpers import long_table
    frame = long_table(30, inputs=False)
    frame["time"] = np.round(frame["time"])
    frame.drop_duplicates(["pid", "time"]).to_csv(tmp_path / "t.csv", index=False)
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    shard = [sys.executable, "-m", "dynvae", "data", "shard", str(tmp_path / "t.csv"),
             str(tmp_path / "shards"), "--id-col", "pid", "--time-col", "time", "--shards", "4"]
    assert subprocess.run(shard, env=env, capture_output=True, timeout=120).returncode == 0
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--standalone", "-m", "dynvae", "train", "--model", "dkf", "--data",
           str(tmp_path / "shards"), "--set", "max_steps=4", "--set", "batch_size=6",
           "--set", "eval_every=2", "--set", "progress=false", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train_sequences"] == 24 and np.isfinite(metrics["test_elbo_per_step"])
