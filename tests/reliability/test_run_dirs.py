"""Run directories: --force, --resume, locks, unwritable outputs, failed runs."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from dynvae.cli import main
from dynvae.train.checkpoint import load_checkpoint
from tests.reliability.conftest import dkf_args, one_line_error
from tests.reliability.table import reliability


class Killed(BaseException):
    """Stands for the process being stopped (Ctrl-C, kill) inside a run."""


@reliability("run directories", [
    ("train --force over a finished run (checkpoints/last.pt, best.pt, plots) that stops "
     "before its first checkpoint, then --resume",
     "the old run's files are gone, the user's own files stay, and --resume exits 2 "
     "(last.pt does not exist) instead of continuing the old run's weights")])
def test_force_removes_the_previous_runs_files_and_only_those(dkf_run, sequences_csv,
                                                              copy_run, monkeypatch, capsys):
    from dynvae.train import trainer
    run = copy_run(dkf_run)
    (run / "notes.txt").write_text("mine")
    (run / "data").mkdir()
    (run / "data" / "raw.csv").write_text("a\n1\n")

    def stopped(self, *args, **kwargs):
        raise Killed
    monkeypatch.setattr(trainer.Trainer, "fit", stopped)
    with pytest.raises(Killed):
        main(dkf_args(sequences_csv, run, "--set", "max_steps=2", "--set", "lr=0.05",
                      "--force"))
    left = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    assert left == ["data", "data/raw.csv", "notes.txt"]
    monkeypatch.undo()
    assert main(dkf_args(sequences_csv, run, "--set", "max_steps=2", "--set", "lr=0.05",
                         "--resume")) == 2
    assert "last.pt does not exist" in one_line_error(capsys)


@reliability("run directories", [
    ("train --resume with another learning rate or latent size than last.pt was written "
     "with", "exit 2 naming the differing keys (train.lr, model_config.latent_dim)"),
    ("train --resume with only a larger max_steps", "resumes: exit 0, last.pt at the new "
     "step count")])
def test_resume_refuses_another_configuration(dkf_run, sequences_csv, copy_run, capsys):
    run = copy_run(dkf_run)
    assert main(dkf_args(sequences_csv, run, "--set", "max_steps=3", "--set", "lr=0.05",
                         "--set", "latent_dim=3", "--resume")) == 2
    err = one_line_error(capsys)
    assert "differing keys: model_config.latent_dim, train.lr" in err
    assert main(dkf_args(sequences_csv, run, "--set", "max_steps=3", "--seed", "1",
                         "--resume")) == 2
    assert "model_config" not in (err := one_line_error(capsys)) and "seed" in err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2
    assert main(dkf_args(sequences_csv, run, "--set", "max_steps=3", "--resume")) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3


@reliability("run directories", [
    ("train with both --force and --resume", "exit 2: ...give one")])
def test_force_and_resume_together_is_an_error(dkf_run, sequences_csv, copy_run, capsys):
    run = copy_run(dkf_run)
    before = sorted(p.name for p in run.rglob("*"))
    assert main(dkf_args(sequences_csv, run, "--force", "--resume")) == 2
    assert "give one" in one_line_error(capsys)
    assert sorted(p.name for p in run.rglob("*")) == before


@reliability("run directories", [
    ("gp --out DIR where DIR holds a user's config.json", "exit 2 (pass --force); the "
     "user's file is unchanged"),
    ("gp --force over a gp run", "replaces predictions.csv, metrics.json, config.json and "
     "plots/gp.png; a user file in DIR stays")])
def test_gp_keeps_the_train_rule_for_existing_directories(tmp_path, capsys):
    data = tmp_path / "sine.csv"
    pd.DataFrame({"t": np.arange(30.0), "v": np.sin(np.arange(30.0) / 4)}).to_csv(data,
                                                                                  index=False)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"mine": 1}')
    gp = ["gp", "--data", str(data), "--time-col", "t", "--kernel", "matern52", "--max-iter", "3",
          "--out", str(out)]
    assert main(gp) == 2
    assert "--force" in one_line_error(capsys)
    assert (out / "config.json").read_text() == '{"mine": 1}'
    (out / "config.json").unlink()
    (out / "notes.txt").write_text("mine")
    assert main(gp + ["--force"]) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert main(gp + ["--force", "--max-iter", "1"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["n_evaluations"] < first["n_evaluations"]
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.rglob("*")) == ["config.json", "gp.png",
                                                      "metrics.json", "notes.txt", "plots",
                                                      "predictions.csv"]


@reliability("run directories", [
    ("train, gp or evaluate on a directory another process holds (its lock file locked)",
     "exit 2 naming the holder's pid; nothing in the directory changes")])
def test_a_directory_in_use_is_refused(lgssm_run, sequences_csv, copy_run, tmp_path, capsys):
    from dynvae.train.lock import DirectoryLock
    run = copy_run(lgssm_run)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with DirectoryLock(run), DirectoryLock(fresh):
        assert main(["evaluate", str(run)]) == 2
        assert f"another dynvae process (pid {os.getpid()})" in one_line_error(capsys)
        assert main(["train", "--model", "lgssm", "--data", str(sequences_csv), "--id-col",
                     "id", "--time-col", "t", "--set", "max_iter=1", "--out",
                     str(fresh)]) == 2
        assert f"being written by another dynvae process (pid {os.getpid()})" in \
            one_line_error(capsys)
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before and sorted(fresh.iterdir()) == []


@reliability("run directories", [
    ("--out below a regular file (train, gp, impute, forecast, sample), with a --data file "
     "that does not exist", "exit 2 naming --out, before any data is read"),
    ("--out of sample naming an existing directory", "exit 2: ...it is a directory")])
def test_unwritable_outputs_are_refused_before_any_work(lgssm_run, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    missing = str(tmp_path / "no-such.csv")
    commands = [
        ["train", "--model", "lgssm", "--data", missing, "--out", str(blocker / "run")],
        ["gp", "--data", missing, "--out", str(blocker / "run")],
        ["impute", str(lgssm_run), "--data", missing, "--out", str(blocker / "i.csv")],
        ["forecast", str(lgssm_run), "--data", missing, "--horizon", "1", "--out",
         str(blocker / "f.csv")],
        ["sample", str(lgssm_run), "-n", "1", "--steps", "1", "--out", str(blocker / "s")]]
    for args in commands:
        assert main(args) == 2, args
        err = one_line_error(capsys)
        assert "cannot write" in err and "is not a directory" in err, err
    assert main(["sample", str(lgssm_run), "-n", "1", "--steps", "1", "--out",
                 str(tmp_path)]) == 2
    assert "it is a directory" in one_line_error(capsys)


def writes_through_permissions(folder) -> bool:
    """Whether this process can create files in a folder without write permission
    (root, or CAP_DAC_OVERRIDE)."""
    probe = folder / "probe"
    probe.mkdir(mode=0o555)
    try:
        (probe / "x").touch()
        return True
    except PermissionError:
        return False
    finally:
        probe.chmod(0o755)


@reliability("run directories", [
    ("--out inside a directory without write permission (skipped where the process "
     "writes through permissions, e.g. as root)", "exit 2: ...is not writable (Permission "
     "denied), before the data is read")])
def test_a_directory_without_permission_is_refused(sequences_csv, tmp_path, capsys):
    if writes_through_permissions(tmp_path):
        pytest.skip("this process writes through file permissions (root)")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        assert main(["train", "--model", "lgssm", "--data", str(tmp_path / "none.csv"),
                     "--out", str(locked / "run")]) == 2
        assert "is not writable (Permission denied)" in one_line_error(capsys)
        assert main(["impute", str(tmp_path), "--data", str(sequences_csv), "--out",
                     str(locked / "i.csv")]) == 2
        assert "is not writable (Permission denied)" in one_line_error(capsys)
    finally:
        locked.chmod(0o755)


@reliability("run directories", [
    ("a run that fails after creating its directory", "the directory is removed; the same "
     "command then runs without --force"),
    ("a run that fails in a directory holding a user's file", "the run's files are removed, "
     "the user's file stays"),
    ("a directory left with only empty checkpoints/ and plots/ (a run killed before its "
     "first write)", "a new run into it needs no --force")])
def test_a_failed_run_leaves_nothing_behind(sequences_csv, tmp_path, monkeypatch):
    from dynvae.train import run as rundir
    run = tmp_path / "deep" / "run"
    args = ["train", "--model", "lgssm", "--data", str(sequences_csv), "--id-col", "id",
            "--time-col", "t", "--set", "method=em", "--set", "max_iter=1", "--out", str(run)]

    def fails(out, metrics):
        (out / "metrics.json").write_text("{}")          # a half-written run
        raise RuntimeError("disk full")
    monkeypatch.setattr(rundir, "write_metrics", fails)
    with pytest.raises(RuntimeError, match="disk full"):
        main(args)
    assert not (tmp_path / "deep").exists()
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="disk full"):
        main(args + ["--force"])
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    (run / "notes.txt").unlink()
    (run / "checkpoints").mkdir()
    (run / "plots").mkdir()
    (run / ".dynvae.lock").write_text("12345")
    monkeypatch.undo()
    assert main(args) == 0
    assert (run / "metrics.json").is_file() and not (run / ".dynvae.lock").exists()
    assert torch.isfinite(torch.tensor(json.loads((run / "metrics.json").read_text())
                                       ["log_likelihood"]))


@reliability("run directories", [
    ("the lock file removed by its holder between another process's open and flock",
     "the other process locks a fresh lock file, never the removed one (two holders at "
     "once are impossible)")])
def test_a_lock_released_during_acquisition_is_taken_afresh(tmp_path, monkeypatch):
    from dynvae.train import lock as lock_module
    first = lock_module.DirectoryLock(tmp_path).acquire()
    real_flock, calls = lock_module.fcntl.flock, []

    def release_first_then_flock(fd, op):
        if not calls:
            first.release()                # unlinks the file this fd was opened on
        calls.append(os.fstat(fd).st_ino)
        return real_flock(fd, op)
    monkeypatch.setattr(lock_module.fcntl, "flock", release_first_then_flock)
    second = lock_module.DirectoryLock(tmp_path).acquire()
    assert len(calls) == 2                  # the first flock got the removed file: retried
    assert os.stat(second.path).st_ino == os.fstat(second._fd).st_ino == calls[-1]
    monkeypatch.undo()
    with pytest.raises(FileExistsError, match=f"pid {os.getpid()}"):
        lock_module.DirectoryLock(tmp_path).acquire()     # the live file is held
    second.release()
    assert not second.path.exists()
