"""The DMM (the DKF with its backward 'structured inference' encoder) trained on the
JSB chorales until its validation bound stops improving: a run of hours, so ``slow``.

``DYNVAE_DMM_BUDGET`` sets the wall-clock budget in seconds (default 4200, the run in
docs/results/chorales.md: 29,099 steps, best validation bound at step 15,600, test
NLL per step 8.018 (ELBO) / 7.684 (IWAE, K = 100) on 2 shared CPU cores)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dmm_reaches_its_validation_plateau_on_the_chorales(tmp_path):
    budget = float(os.environ.get("DYNVAE_DMM_BUDGET", "4200"))
    out = tmp_path / "dmm.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chorales_results.py"),
                    "--budget-seconds", str(budget), "--lr", "3e-3", "--anneal-steps", "200",
                    "--eval-every", "200", "--models", "dkf-backward", "--json", str(out)],
                   check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    (row,) = json.loads(out.read_text())
    # Converged in the sense that matters for a held-out bound: the best validation
    # parameters came well before the budget ran out.
    assert row["best_step"] < 0.8 * row["steps"], row
    assert row["test_nll_iwae"] <= row["test_nll_elbo"], row
    # Below what 900 s reached (8.260 / 7.981), above the published converged DMM's
    # 6.926 / 6.388 on a different extraction of the chorales.
    assert 6.0 < row["test_nll_iwae"] < 7.9, row
