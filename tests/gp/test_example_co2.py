"""The CO2 example (the figure of docs/gp.md) runs end to end in --smoke mode."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "co2_gp.py"

pytest.importorskip("statsmodels")


def test_co2_example_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("co2_gp", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    metrics = module.main(["--smoke", "--out", str(tmp_path)])
    assert (tmp_path / "co2_gp.png").stat().st_size > 10_000
    assert metrics["n_times"] == 143 and metrics["n_observed"] == 140   # every 16th week
    assert 0.5 < metrics["mean.slope"] < 2.5                 # ppm per year, 1958-2001
    assert 1975 < metrics["mean.t_ref"] < 1985
