"""Small fitted runs and data files shared by the reliability tests."""

import shutil

import numpy as np
import pandas as pd
import pytest

from dynvae.cli import main

TINY_DKF = ["--set", "latent_dim=2", "--set", "encoder_hidden=8", "--set",
            "transition_hidden=8", "--set", "emission_hidden=8", "--set", "batch_size=4",
            "--set", "eval_every=2", "--set", "checkpoint_every=1", "--set", "progress=false",
            "--set", "n_predict_samples=4"]


def write_sequences(path, n=8, T=30, seed=0):
    """A long-format CSV of ``n`` noisy sine sequences with two features and some gaps."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        x = np.sin(np.arange(T) / 3.0 + i)[:, None] + rng.normal(0, 0.2, (T, 2))
        x[rng.random((T, 2)) < 0.1] = np.nan
        rows.append(pd.DataFrame({"id": f"s{i}", "t": np.arange(T, dtype=float),
                                  "a": x[:, 0], "b": x[:, 1]}))
    pd.concat(rows).to_csv(path, index=False)
    return path


def dkf_args(data, out, *extra):
    return ["train", "--model", "dkf", "--data", str(data), "--id-col", "id", "--time-col",
            "t", *TINY_DKF, "--out", str(out), *extra]


@pytest.fixture(scope="session")
def sequences_csv(tmp_path_factory):
    return write_sequences(tmp_path_factory.mktemp("data") / "sequences.csv")


@pytest.fixture(scope="session")
def dkf_run(tmp_path_factory, sequences_csv):
    """A DKF run of 2 gradient steps with checkpoints/last.pt (resumable)."""
    run = tmp_path_factory.mktemp("runs") / "dkf"
    assert main(dkf_args(sequences_csv, run, "--set", "max_steps=2")) == 0
    return run


@pytest.fixture(scope="session")
def lgssm_run(tmp_path_factory, sequences_csv):
    """An LGSSM run fitted by 3 EM iterations."""
    run = tmp_path_factory.mktemp("runs") / "lgssm"
    assert main(["train", "--model", "lgssm", "--data", str(sequences_csv), "--id-col", "id",
                 "--time-col", "t", "--set", "method=em", "--set", "max_iter=3",
                 "--out", str(run)]) == 0
    return run


@pytest.fixture
def copy_run(tmp_path):
    """copy_run(run) -> a copy of ``run`` under this test's tmp_path."""
    def copy(run, name="run"):
        return shutil.copytree(run, tmp_path / name)
    return copy


def one_line_error(capsys) -> str:
    """The CLI's stderr, checked to be one line; returned for the caller's checks."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dynvae "), err
    return err
