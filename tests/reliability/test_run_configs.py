"""Tampered run files (config.json, metrics.json): one line naming the key, exit 2."""

import json

import pytest

from dynvae.cli import main
from tests.reliability.conftest import one_line_error
from tests.reliability.table import reliability

TAMPERED = [
    ("top level a list", lambda c: [c], "expected a mapping of names to values, got a list"),
    ("'split' missing", lambda c: {k: v for k, v in c.items() if k != "split"},
     "'split' is missing"),
    ("split.test_ids not a list", lambda c: {**c, "split": {**c["split"], "test_ids": "s1"}},
     "'test_ids' must be a list"),
    ("split.test_ids holding numbers", lambda c: {**c, "split": {**c["split"],
                                                                  "test_ids": [1]}},
     "'test_ids' must be a list of sequence ids"),
    ("model name not a string", lambda c: {**c, "model": 42}, "'model' must be a string"),
    ("an unknown key in the data source", lambda c: {**c, "data": {**c["data"], "sql": "x"}},
     "'data': unknown key 'sql'"),
    ("a data source naming no file and no dataset", lambda c: {**c, "data": {}},
     "needs exactly one of 'data' (a file) and 'dataset' (a name)"),
    ("value_cols not a list of names", lambda c: {**c, "data": {**c["data"],
                                                                "value_cols": [1, 2]}},
     "'value_cols' must be a list of column names"),
    ("an unknown key in the evaluation settings",
     lambda c: {**c, "evaluation": {**c["evaluation"], "foo": 1}},
     "'evaluation': unknown key 'foo'"),
    ("an evaluation setting of the wrong type",
     lambda c: {**c, "evaluation": {**c["evaluation"], "iwae_samples": "16"}},
     "'iwae_samples' must be an integer"),
    ("an evaluation setting out of range",
     lambda c: {**c, "evaluation": {**c["evaluation"], "hide_fraction": float("nan")}},
     "'hide_fraction' must be a finite number"),
    ("'seed' missing", lambda c: {k: v for k, v in c.items() if k != "seed"},
     "'seed' is missing"),
]


@reliability("run configs", [(f"config.json with {case}", f"exit 2, one line: ...{message}...")
                             for case, _, message in TAMPERED])
@pytest.mark.parametrize("case, change, message", TAMPERED, ids=[c[0] for c in TAMPERED])
def test_tampered_config_json_is_a_one_line_error(case, change, message, lgssm_run, copy_run,
                                                  capsys):
    run = copy_run(lgssm_run)
    path = run / "config.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    assert main(["evaluate", str(run)]) == 2
    err = one_line_error(capsys)
    assert message in err and "config.json" in err


@reliability("run configs", [
    ("config.json whose top level is a list, read by impute, forecast and sample",
     "exit 2, one line naming config.json"),
    ("config.json that is not JSON", "exit 2: ...is not valid JSON..."),
    ("metrics.json whose top level is a list, rewritten by evaluate",
     "exit 2, one line naming metrics.json; the file is left as it was")])
def test_every_command_checks_the_run_files(lgssm_run, sequences_csv, copy_run, tmp_path,
                                            capsys):
    run = copy_run(lgssm_run)
    config = run / "config.json"
    good = config.read_text()
    config.write_text(json.dumps([json.loads(good)]))
    for args in (["impute", str(run), "--data", str(sequences_csv), "--out",
                  str(tmp_path / "i.csv")],
                 ["forecast", str(run), "--data", str(sequences_csv), "--horizon", "2",
                  "--out", str(tmp_path / "f.csv")],
                 ["sample", str(run), "-n", "1", "--steps", "2", "--out",
                  str(tmp_path / "s.csv")]):
        assert main(args) == 2, args
        assert "config.json: expected a mapping" in one_line_error(capsys)
    config.write_text(good[:-20])
    assert main(["evaluate", str(run)]) == 2
    assert "is not valid JSON" in one_line_error(capsys)
    config.write_text(good)
    (run / "metrics.json").write_text("[1, 2]")
    assert main(["evaluate", str(run)]) == 2
    assert "metrics.json: expected a mapping" in one_line_error(capsys)
    assert (run / "metrics.json").read_text() == "[1, 2]"
