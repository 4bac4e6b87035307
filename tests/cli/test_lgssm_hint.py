"""`dynvae train --model lgssm` with its defaults (a local level) on seasonal data
prints the settings of an LGSSM that can learn the season, and only then."""

import numpy as np
import pandas as pd

from dynvae.cli import main
from dynvae.commands.train import local_level_hint
from dynvae.models.lgssm_config import Config


def test_the_hint_follows_a_season_the_local_level_misses(tmp_path, capsys):
    rng = np.random.default_rng(0)
    t = np.arange(120.0)
    frame = pd.DataFrame({"id": np.repeat(["a", "b", "c", "d"], 120), "t": np.tile(t, 4),
                          "v": np.concatenate([np.sin(2 * np.pi * (t + k) / 12)
                                               + 0.05 * rng.normal(size=120)
                                               for k in range(4)])})
    frame.to_csv(tmp_path / "wave.csv", index=False)
    assert main(["train", "--model", "lgssm", "--data", str(tmp_path / "wave.csv"),
                 "--id-col", "id", "--time-col", "t", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "hint: the data repeat every 12 steps" in out
    assert "--set model.transition=linear --set model.emission=linear " \
           "--set model.initial=learned --set model.state_dim=4" in out


def test_no_hint_without_a_season_or_for_a_learned_transition():
    seasonal = {"baseline_forecast_season": 24.0, "forecast_mse": 40.0,
                "baseline_forecast_mse_seasonal_naive": 0.05}
    assert local_level_hint("lgssm", Config(), 1, seasonal).startswith("hint: ")
    assert local_level_hint("lgssm", Config(), 3, seasonal).endswith("state_dim=8 (or more)")
    assert local_level_hint("lgssm", Config(transition="linear"), 1, seasonal) is None
    assert local_level_hint("dkf", Config(), 1, seasonal) is None
    assert local_level_hint("lgssm", Config(), 1, {**seasonal, "forecast_mse": 0.09}) is None
    assert local_level_hint("lgssm", Config(), 1,
                            {**seasonal, "baseline_forecast_season": 1.0}) is None
