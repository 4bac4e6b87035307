"""No output file named on the command line is replaced without --force: impute,
forecast, sample and datasets export check every output before any work (exit 2, one
line naming the file, nothing written); with --force each file is replaced."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dynvae.cli import main
from tests.reliability.conftest import write_sequences

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def lgssm_run(tmp_path_factory):
    """An LGSSM fitted by 3 EM iterations on 8 sequences of 2 features; data and run."""
    root = tmp_path_factory.mktemp("overwrite")
    data = write_sequences(root / "sequences.csv")
    assert main(["train", "--model", "lgssm", "--data", str(data), "--id-col", "id",
                 "--time-col", "t", "--set", "method=em", "--set", "max_iter=3",
                 "--out", str(root / "run")]) == 0
    return str(data), str(root / "run")


def command(name, data, run, files):
    """argv of ``name`` writing ``files`` ({flag: path})."""
    head = {"impute": ["impute", run, "--data", data],
            "forecast": ["forecast", run, "--data", data, "--horizon", "2"],
            "sample": ["sample", run, "-n", "2", "--steps", "4"]}[name]
    return head + [a for flag, path in files.items() for a in (flag, str(path))]


# per command: its output flags and the file names they get here
OUTPUTS = {"impute": {"--out": "a.csv", "--plot": "a.png"},
           "forecast": {"--out": "a.csv", "--plot": "a.png"},
           "sample": {"--out": "a.csv"}}


def check_written(flag, path, name):
    """The file of ``flag`` is a real output of ``name``, not the user's bytes."""
    if flag == "--plot":
        assert path.read_bytes()[:8] == PNG_MAGIC
        return
    table = pd.read_csv(path)
    expected = {"impute": {"id", "t", "feature", "observed", "mean", "std"},
                "forecast": {"id", "step", "t", "feature", "mean", "std"},
                "sample": {"sample", "step", "a", "b"}}[name]
    assert expected <= set(table.columns) and len(table) > 0


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dynvae "), err
    return err


@pytest.mark.parametrize("name", list(OUTPUTS))
def test_each_existing_output_is_kept_and_nothing_is_written(name, lgssm_run, tmp_path,
                                                             capsys):
    data, run = lgssm_run
    for existing in OUTPUTS[name]:
        folder = tmp_path / existing.strip("-")
        folder.mkdir()
        files = {flag: folder / fname for flag, fname in OUTPUTS[name].items()}
        files[existing].write_bytes(b"mine")
        assert main(command(name, data, run, files)) == 2, existing
        err = error_line(capsys)
        assert f"{existing} {files[existing]} exists; pass --force to replace it" in err
        assert files[existing].read_bytes() == b"mine"
        assert [p.name for p in folder.iterdir()] == [files[existing].name]   # no other file

        assert main(command(name, data, run, files) + ["--force"]) == 0
        for flag, path in files.items():
            check_written(flag, path, name)
        assert sorted(p.name for p in folder.iterdir()) == sorted(OUTPUTS[name].values())


def test_sample_npy_is_kept_then_replaced_by_an_array(lgssm_run, tmp_path, capsys):
    _, run = lgssm_run
    npy = tmp_path / "draws.npy"
    np.save(npy, np.zeros(3))
    before = npy.read_bytes()
    argv = ["sample", run, "-n", "2", "--steps", "4", "--out", str(npy)]
    assert main(argv) == 2
    assert "--out" in error_line(capsys) and npy.read_bytes() == before
    assert main(argv + ["--force"]) == 0
    assert np.load(npy).shape == (2, 4, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["draws.npy"]     # no temporary left


def test_two_outputs_naming_one_file_are_refused(lgssm_run, tmp_path, capsys):
    data, run = lgssm_run
    same = tmp_path / "x.png"
    argv = command("impute", data, run, {"--out": same, "--plot": tmp_path / "." / "x.png"})
    assert main(argv + ["--force"]) == 2
    assert "--out and --plot name the same file" in error_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["impute", "forecast", "sample", "evaluate"])
@pytest.mark.parametrize("target", ["data", "config.json", "checkpoints/model.pt",
                                    "metrics.csv"])
def test_no_output_replaces_the_input_data_or_a_file_of_the_run(name, target, lgssm_run,
                                                                capsys):
    """Not even with --force: --out naming the --data file or a file the run is made of
    is one error line, and that file keeps its bytes."""
    data, run = lgssm_run
    victim = Path(data) if target == "data" else Path(run) / target
    before = victim.read_bytes()
    if name == "evaluate":
        argv = ["evaluate", run, "--data", data, "--out", str(victim)]
    elif name == "sample" and target == "data":
        pytest.skip("sample reads no --data")
    else:
        argv = command(name, data, run, {"--out": victim})
    assert main(argv + ["--force"]) == 2
    err = error_line(capsys)
    assert ("is the --data input" if target == "data" else "is a file of the run") in err
    assert victim.read_bytes() == before


def test_datasets_export_refuses_before_loading(tmp_path, monkeypatch, capsys):
    from dynvae.commands import common
    table = tmp_path / "nile.csv"
    table.write_bytes(b"mine")

    def no_loading(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the output was checked")
    with monkeypatch.context() as patch:
        patch.setattr(common, "load_data", no_loading)
        assert main(["datasets", "export", "nile", str(table)]) == 2
    assert f"{table} exists; pass --force to replace it" in error_line(capsys)
    assert table.read_bytes() == b"mine"
    assert main(["datasets", "export", "nile", str(table), "--force"]) == 0
    assert len(pd.read_csv(table)) == 100                    # the Nile series, 1871-1970


@pytest.mark.parametrize("argv", [["impute"], ["forecast"], ["sample"],
                                  ["datasets", "export"]])
def test_force_is_one_documented_option(argv, capsys):
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--force replace" in text
    assert "(without --force an existing file stops the command before anything is " \
        "written)" in text


def test_out_names_the_format_the_command_writes(lgssm_run, tmp_path, capsys):
    """--out x.npz, y.parquet or z.txt got CSV text (or JSON) under a name that promised
    another format: one error line, exit 2, nothing written."""
    data, run = lgssm_run
    given = ["--data", data]
    for command in (["sample", run, "-n", "2", "--steps", "3", "--out"],
                    ["forecast", run, *given, "--horizon", "2", "--out"],
                    ["impute", run, *given, "--out"],
                    ["evaluate", run, *given, "--out"]):
        for name in ("x.npz", "y.parquet", "z.txt"):
            assert main([*command, str(tmp_path / name)]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "give a file name ending in ." in err[0], err
            assert not (tmp_path / name).exists()
