"""The DKF synthetic example runs in smoke mode and its numbers are coherent."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dkf_synthetic.py"


def test_dkf_synthetic_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("dkf_synthetic", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "result.json"
    result = module.main(["--smoke", "--json", str(out)])
    assert json.loads(out.read_text()) == result
    assert "exact log p/entry" in capsys.readouterr().out
    elbos = [h["test_elbo_per_entry"] for h in result["history"]]
    exact, iwae = result["exact_log_likelihood_per_entry"], result["test_iwae_per_entry"]
    assert all(math.isfinite(v) for v in [*elbos, exact, iwae])
    assert elbos[-1] > elbos[0]                   # training improves the held-out bound
    assert max(elbos) < exact and iwae < exact    # bounds stay below the true model's log p
    assert iwae > elbos[-1] - 0.05


@pytest.mark.slow
def test_dkf_synthetic_full_run_approaches_the_exact_log_likelihood():
    spec = importlib.util.spec_from_file_location("dkf_synthetic", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--steps", "300", "--every", "100"])
    exact, iwae = result["exact_log_likelihood_per_entry"], result["test_iwae_per_entry"]
    elbo = result["history"][-1]["test_elbo_per_entry"]
    assert exact - 0.15 < elbo < exact
    assert exact - 0.1 < iwae < exact
