"""--threads: the CPU threads of a command's tensor operations (dynvae.commands.common.
apply_threads). Unless told, a command runs one thread (runs side by side on a small
machine otherwise stall each other); OMP_NUM_THREADS set by the user or by torchrun is
left to torch; --threads N is N. train records the number in config.json."""

import argparse
import json

import pytest
import torch

from dynvae.cli import main
from dynvae.commands.common import DEFAULT_THREADS, apply_threads

TINY = ["--dataset", "healing-digits", "--dataset-option", "n_sequences=12",
        "--dataset-option", "length=4", "--set", "latent_dim=2", "--set", "encoder_hidden=4",
        "--set", "transition_hidden=4", "--set", "emission_hidden=4", "--set", "max_steps=1",
        "--set", "progress=false", "--set", "n_predict_samples=2"]


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_one_thread_unless_told(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    assert DEFAULT_THREADS == 1
    assert apply_threads(argparse.Namespace(threads=None)) == 1 == torch.get_num_threads()
    assert apply_threads(argparse.Namespace(threads=2)) == 2 == torch.get_num_threads()


def test_omp_num_threads_is_left_to_torch(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    assert apply_threads(argparse.Namespace(threads=None)) == 2
    assert apply_threads(argparse.Namespace(threads=1)) == 1      # --threads wins


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_bad_thread_counts_are_usage_errors(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model", "dkf", "--out", "r", "--threads", bad, *TINY])
    assert exit_info.value.code == 2
    assert "--threads: must be an integer >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("given", [None, 2])
def test_train_records_its_threads(given, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    extra = [] if given is None else ["--threads", str(given)]
    run = tmp_path / "run"
    assert main(["train", "--model", "dkf", "--out", str(run), *TINY, *extra]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["threads"] == (given or 1)
    torch.set_num_threads(3)
    assert main(["evaluate", str(run), *extra]) == 0              # evaluate applies it too
    assert torch.get_num_threads() == (given or 1)
