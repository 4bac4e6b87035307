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


@reliability("evaluation", [
    ("dynvae evaluate run --data other.csv", "metrics of every sequence of the file "
     "written to run/metrics-other.json (or --out); run/metrics.json, the run's own held-out "
     "metrics, byte-identical"),
    ("the same again, or --out naming run/metrics.json", "one-line error, nothing written; "
     "--force replaces the file"),
    ("dynvae evaluate run --out x.json (no --data)", "one-line error: --out is for --data")])
def test_evaluate_on_other_data_leaves_the_runs_metrics(dkf_run, copy_run, sequences_csv,
                                                         capsys, tmp_path):
    from tests.reliability.conftest import one_line_error
    run = copy_run(dkf_run)
    own = (run / "metrics.json").read_text()
    other = tmp_path / "other.csv"
    other.write_text(sequences_csv.read_text())
    data = ["--data", str(other), "--id-col", "id", "--time-col", "t"]
    assert main(["evaluate", str(run), *data]) == 0
    written = run / "metrics-other.json"
    printed = capsys.readouterr()
    assert "wrote " + str(written) in printed.out
    assert (run / "metrics.json").read_text() == own
    metrics = json.loads(written.read_text())
    ids = {line.split(",")[0] for line in sequences_csv.read_text().splitlines()[1:]}
    assert metrics["n_test_sequences"] == len(ids)
    # the file holds the run's own training sequences: counted, and said on stderr
    trained = set(json.loads((run / "config.json").read_text())["split"]["train_ids"])
    assert metrics["n_training_sequences"] == len(trained & ids) > 0
    assert f"{len(trained & ids)} of the {len(ids)} sequences" in printed.err
    assert set(MONTE_CARLO) <= set(metrics)
    before = written.read_text()
    assert main(["evaluate", str(run), *data]) == 2
    assert "exists; pass --force" in one_line_error(capsys)
    assert main(["evaluate", str(run), *data, "--out", str(run / "metrics.json")]) == 2
    assert f"is a file of the run {run} (metrics.json)" in one_line_error(capsys)
    assert written.read_text() == before and (run / "metrics.json").read_text() == own
    assert main(["evaluate", str(run), *data, "--force"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--out", str(tmp_path / "x.json")]) == 2
    assert "--out is for metrics on --data" in one_line_error(capsys)
    assert not (tmp_path / "x.json").exists()
