"""`dynvae data shard` then `dynvae train --data DIR`: a streamed run on a shard
directory, resumed from its checkpoint, and the commands that read it back."""

import json

import numpy as np
import pytest

from dynvae.cli import main
from dynvae.data.sharded import ShardedDataset
from dynvae.train.checkpoint import load_checkpoint
from tests.data.shard_helpers import long_table

TINY_DKF = ["--set", "latent_dim=2", "--set", "encoder_hidden=8", "--set",
            "transition_hidden=8", "--set", "emission_hidden=8", "--set", "batch_size=8",
            "--set", "eval_every=2", "--set", "checkpoint_every=2", "--set", "progress=false",
            "--set", "n_predict_samples=4"]


@pytest.fixture
def shards(tmp_path, capsys):
    frame = long_table(40, inputs=False)
    frame["time"] = np.round(frame["time"])          # integer steps: a discrete-time model
    frame = frame.drop_duplicates(["pid", "time"])
    frame.to_csv(tmp_path / "table.csv.gz", index=False)
    code = main(["data", "shard", str(tmp_path / "table.csv.gz"), str(tmp_path / "shards"),
                 "--id-col", "pid", "--time-col", "time", "--shards", "3"])
    assert code == 0
    assert "40 sequences in 3 shards" in capsys.readouterr().out
    return tmp_path / "shards"


def test_train_streams_a_shard_directory_and_resumes(shards, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--model", "dkf", "--data", str(shards), *TINY_DKF,
                 "--set", "max_steps=3", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    data = ShardedDataset(shards)
    train, _, test = data.split((0.8, 0.1, 0.1), seed=0)
    # millions of training ids are not listed: the split is the seed's draw over the index
    assert config["split"]["train_ids"] is None and config["split"]["test_ids"] == test.ids
    scale = train.fit_standardizer()
    np.testing.assert_allclose(config["standardizer"]["mean"], scale.mean, rtol=1e-15)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_train_sequences"] == 32 and np.isfinite(metrics["test_elbo_per_step"])
    assert main(["train", "--model", "dkf", "--data", str(shards), *TINY_DKF,
                 "--set", "max_steps=6", "--out", str(run), "--resume"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 6
    assert main(["evaluate", str(run)]) == 0         # reads the run's test part only
    evaluated = json.loads((run / "metrics.json").read_text())
    assert evaluated["n_test_sequences"] == len(test) == 4
    assert main(["impute", str(run), "--data", str(shards), "--out",
                 str(tmp_path / "imputed.csv")]) == 0


def test_column_options_on_a_shard_directory_are_an_error(shards, tmp_path, capsys):
    code = main(["train", "--model", "dkf", "--data", str(shards), "--id-col", "pid",
                 "--out", str(tmp_path / "r")])
    assert code == 2 and "is a shard directory" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, message", [
    (["--id-col", "nope"], "unknown column(s) ['nope']"),
    (["--id-col", "pid", "--shards", "0"], "--shards must be >= 1"),
])
def test_shard_errors_are_one_line_exit_2(tmp_path, capsys, args, message):
    long_table(4).to_csv(tmp_path / "t.csv", index=False)
    code = main(["data", "shard", str(tmp_path / "t.csv"), str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
