"""Progress bars: off by default in library calls, on in the CLI."""

import numpy as np
import pandas as pd
import torch

from dynvae.cli import main
from dynvae.data.batch import SequenceBatch
from dynvae.models.lgssm import LGSSM
from dynvae.train.trainer import TrainConfig, Trainer

from .tiny_model import ListDataset, TinyLinearDVAE, make_data


def test_library_training_and_fitting_print_nothing(capsys):
    torch.manual_seed(0)
    model = TinyLinearDVAE(3, 2).double()
    Trainer(model, TrainConfig(max_steps=3, batch_size=4, dtype="float64")).fit(
        ListDataset(make_data(8)))
    lgssm = LGSSM.local_level(1)
    batch = SequenceBatch.from_tensor(torch.randn(1, 20, 1, dtype=torch.float64).cumsum(1))
    lgssm.fit_em(batch, n_iter=3)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_the_cli_shows_a_training_bar(tmp_path, capsys, monkeypatch):
    # bars are drawn on a terminal only; here standard error is captured, so draw them
    for where in ("dynvae.progress.shown", "dynvae.train.trainer.shown"):
        monkeypatch.setattr(where, lambda enabled=True: not enabled)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": np.repeat(["a", "b", "c", "d"], 10),
                          "t": np.tile(np.arange(10.0), 4), "v": rng.normal(size=40)})
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert main(["train", "--model", "dkf", "--data", str(tmp_path / "d.csv"), "--id-col", "id",
                 "--time-col", "t", "--set", "max_steps=3", "--set", "latent_dim=2",
                 "--out", str(tmp_path / "run")]) == 0
    assert "train:" in capsys.readouterr().err


def test_a_bar_in_a_log_writes_plain_lines_for_long_phases(capsys, monkeypatch):
    from dynvae import progress
    # standard error is captured (not a terminal), so the bar is not drawn
    bar = progress.progress_bar(6, "evaluate", unit="seq")
    bar.set_description("likelihood")
    bar.update(2)                          # a phase shorter than LINE_SECONDS: no line
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)
    bar.set_description("imputation")
    bar.update(3)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate: imputation, 5/6 seq, ")
    hidden = progress.progress_bar(6, "evaluate", enabled=False)      # asked for no progress
    hidden.update(6)
    hidden.close()
    assert capsys.readouterr().err == ""
