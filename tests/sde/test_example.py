"""The survival-kit example runs end to end in --smoke mode and writes its figures."""

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sde_survival_kit.py"


def test_survival_kit_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("sde_survival_kit", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--smoke", "--out", str(tmp_path)])
    for name in ("sde_paths.png", "sde_orders.png", "sde_lorenz.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    assert abs(results["lemma_drift"] - (0.3 - 0.5 * 0.4 ** 2)) < 1e-12
    assert results["max_abs_log_z_minus_y"] < 1e-2
    assert results["lorenz_shape"] == [8, 100, 3]
