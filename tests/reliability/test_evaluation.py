"""`dynvae evaluate` is repeatable: seeded from the run, or from --seed."""

import json

from dynvae.cli import main
from tests.reliability.table import reliability

MONTE_CARLO = ("log_likelihood", "test_elbo_per_step", "test_iwae_per_step",
               "test_imputation_mse", "test_imputation_nll", "forecast_mse")


@reliability("evaluation", [
    ("dynvae evaluate run three times on an untouched DKF run (Monte Carlo bounds and "
     "predictions)", "metrics.json byte-identical each time, and equal to the metrics "
     "train wrote; --seed 1 gives other Monte Carlo values")])
def test_evaluate_repeats_exactly(dkf_run, copy_run, capsys):
    run = copy_run(dkf_run)
    trained = json.loads((run / "metrics.json").read_text())
    texts = []
    for _ in range(3):
        assert main(["evaluate", str(run)]) == 0
        texts.append((run / "metrics.json").read_text())
    assert texts[0] == texts[1] == texts[2]
    evaluated = json.loads(texts[0])
    assert {k: evaluated[k] for k in MONTE_CARLO} == {k: trained[k] for k in MONTE_CARLO}
    assert main(["evaluate", str(run), "--seed", "1"]) == 0
    reseeded = json.loads((run / "metrics.json").read_text())
    assert reseeded["test_iwae_per_step"] != evaluated["test_iwae_per_step"]
