"""The command line's surface: help for every option, plain text, lazy imports, the
--set key listing, the deprecated --value-col, dataset export."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dynvae.cli import COMMANDS, build_parser, main

SRC = Path(__file__).resolve().parents[2] / "src"


def all_parsers(parser: argparse.ArgumentParser, name: str = "dynvae"):
    """(name, parser) of the parser and every sub-command parser below it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from all_parsers(sub, f"{name} {sub_name}")


def test_every_option_has_help_and_no_markup():
    for name, parser in all_parsers(build_parser()):
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        text = parser.format_help()
        for markup in ("``", ":class:", ":func:", ":meth:"):
            assert markup not in text, f"{name} --help shows {markup!r}"


def test_the_listing_summaries_are_the_commands_own():
    sub = next(a for a in build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    own = {action.dest: action.help for action in sub._choices_actions}
    assert own == COMMANDS


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["gp", "--help"],
                                  ["datasets"], ["train"], ["impute", "--help"]])
def test_help_listing_and_usage_errors_import_neither_torch_nor_pandas(argv):
    code = ("import sys, runpy\n"
            f"sys.argv = ['dynvae', *{argv!r}]\n"
            "try:\n    runpy.run_module('dynvae', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules)\n"
            "print('HEAVY', heavy, file=sys.stderr)\n")
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert "HEAVY []" in proc.stderr, proc.stderr[-2000:]


def test_list_keys_prints_types_defaults_and_docs(capsys):
    assert main(["train", "--model", "dkf", "--list-keys"]) == 0
    out = capsys.readouterr().out
    assert "model (DKFConfig):" in out and "train (TrainConfig):" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("max_seconds"))
    assert "float | None" in line and "None" in line and "wall-clock" in line
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("observation"))
    assert "'gaussian'" in line and "bernoulli" in line
    assert "dynvae.train.defaults" in out and "at least 4000 optimizer steps" in out
    # a comment continued on the lines below its field is shown whole
    from dynvae.commands.config_keys import field_docs
    from dynvae.train.trainer import TrainConfig
    docs = field_docs(TrainConfig)
    assert docs["average_decay"].endswith("(Polyak averaging); 0: the last iterate")
    assert docs["train_window"].endswith("0: whole sequences")
    assert docs["lr"] == "Adam learning rate"
    assert main(["train", "--model", "lgssm", "--list-keys"]) == 0
    out = capsys.readouterr().out
    assert "fit (FitConfig):" in out and "method" in out and "'lbfgs'" in out
    assert "dynvae.train.defaults" not in out       # a self-fitting model: no train rule


def test_train_without_out_or_data_is_one_clear_error(capsys):
    assert main(["train", "--model", "lgssm", "--dataset", "nile"]) == 2
    assert "--out RUN" in capsys.readouterr().err
    assert main(["train", "--model", "lgssm", "--out", "x"]) == 2
    assert "--dataset NAME or --data FILE" in capsys.readouterr().err


def test_gp_value_cols_and_the_deprecated_value_col(capsys):
    args = build_parser(["gp"]).parse_args(["gp", "--data", "f.csv", "--value-cols", "a,b",
                                            "--out", "r"])
    assert args.value_cols == ["a", "b"]
    args = build_parser(["gp"]).parse_args(["gp", "--data", "f.csv", "--value-col", "a",
                                            "--value-col", "b", "--out", "r"])
    assert args.value_cols == ["a", "b"]
    assert "--value-col is deprecated" in capsys.readouterr().err


def test_unknown_gp_engine_is_one_clear_error(tmp_path, capsys):
    csv = tmp_path / "s.csv"
    pd.DataFrame({"t": np.arange(20.0), "v": np.sin(np.arange(20.0))}).to_csv(csv, index=False)
    assert main(["gp", "--data", str(csv), "--time-col", "t", "--engine", "magic",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown --engine 'magic'" in err and "parallel" in err


def test_gp_help_lists_every_engine_and_mean():
    from dynvae.gp.inference import ENGINES
    from dynvae.gp.mean import MEANS
    text = " ".join(dict(all_parsers(build_parser(["gp"])))["dynvae gp"].format_help().split())
    assert all(name in text for name in [*ENGINES, *MEANS])


def test_export_reads_back_to_the_same_dataset(tmp_path, capsys):
    from dynvae.data import load_dataset, read_table
    out = tmp_path / "lgssm.csv"
    assert main(["datasets", "export", "synthetic-lgssm", str(out), "--dataset-option",
                 "n=5"]) == 0
    said = capsys.readouterr().out
    assert "--id-col id --time-col t --value-cols x0,x1,x2" in said
    original = load_dataset("synthetic-lgssm", n=5)
    back = read_table(out, id_col="id", time_col="t", value_cols=["x0", "x1", "x2"])
    assert back.ids == original.ids
    for a, b in zip(original, back, strict=True):
        np.testing.assert_array_equal(a.t, b.t)
        np.testing.assert_array_equal(a.x, b.x)          # NaN where missing, in both
    assert main(["datasets", "export", "synthetic-lgssm", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["datasets", "export", "synthetic-lgssm", str(tmp_path / "x.txt")]) == 2


def test_export_of_nile_has_the_columns_the_readme_uses(tmp_path, capsys):
    pytest.importorskip("statsmodels")
    out = tmp_path / "nile.parquet"
    assert main(["datasets", "export", "nile", str(out)]) == 0
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["year", "volume"] and len(frame) == 100
    assert frame["year"].iloc[0] == 1871 and frame["volume"].iloc[0] == 1120.0


def test_data_in_unit_interval_gets_bernoulli_and_config_records_it(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = [{"id": f"s{i}", "t": t, "a": rng.random(), "b": rng.random() * 0.5}
            for i in range(12) for t in range(6)]
    csv = tmp_path / "unit.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    run = tmp_path / "run"
    assert main(["train", "--model", "dkf", "--data", str(csv), "--id-col", "id",
                 "--time-col", "t", "--set", "max_steps=2", "--set", "progress=false",
                 "--out", str(run)]) == 0
    assert "data in [0, 1]: using observation=bernoulli" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["model"]["observation"] == "bernoulli"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_log_likelihood"] < 0          # a Bernoulli bound, not a density


def test_the_command_process_retains_freed_memory_and_calls_from_python_do_not(monkeypatch):
    from dynvae import cli
    calls = []
    monkeypatch.setattr(cli, "retain_freed_memory", lambda: calls.append(1))
    assert main(["datasets"]) == 0 and calls == []           # a call from Python: untouched
    monkeypatch.setattr(sys, "argv", ["dynvae", "datasets"])
    assert main() == 0 and calls == [1]                       # the command itself
    monkeypatch.undo()
    # a user's own allocator settings stay in force
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1000000")
    assert cli.retain_freed_memory() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retaining_freed_memory_is_accepted_by_glibc():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUN"))}
    out = subprocess.run([sys.executable, "-c", "from dynvae.cli import retain_freed_memory; "
                          "print(retain_freed_memory())"], capture_output=True, text=True,
                         env={**env, "PYTHONPATH": str(SRC)}, check=True)
    assert out.stdout.strip() == "True"
