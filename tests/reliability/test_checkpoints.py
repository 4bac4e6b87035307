"""Hostile and damaged checkpoints: loaded as data only, sizes checked, one clear error."""

import pytest
import torch

from dynvae.cli import main
from dynvae.errors import CheckpointError
from dynvae.models.lgssm import LGSSM
from dynvae.models.registry import MODELS, model_class
from dynvae.train.checkpoint import load_checkpoint, save_checkpoint
from tests.reliability.conftest import dkf_args, one_line_error
from tests.reliability.table import reliability


class OpensAFile:
    """Pickles to a call of ``open(marker, "w")``: unpickling it creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path, marker):
    """Add an object whose unpickling creates ``marker`` to the checkpoint ``path``."""
    payload = torch.load(path, weights_only=False)       # our own file, trusted here
    payload["extra"] = OpensAFile(marker)
    torch.save(payload, path)


def tamper(path, **changes):
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)


def command(name, run, tmp_path, data):
    return {"evaluate": ["evaluate", str(run)],
            "sample": ["sample", str(run), "-n", "2", "--steps", "3", "--out",
                       str(tmp_path / "s.csv")],
            "impute": ["impute", str(run), "--data", str(data), "--out",
                       str(tmp_path / "i.csv")],
            "forecast": ["forecast", str(run), "--data", str(data), "--horizon", "2",
                         "--out", str(tmp_path / "f.csv")]}[name]


@reliability("checkpoints", [
    ("model.pt carrying an object whose unpickling creates a file, read by evaluate, "
     "sample, impute and forecast",
     "exit 2, one line naming model.pt and the object (io.open); the file is not "
     "created")])
@pytest.mark.parametrize("name", ["evaluate", "sample", "impute", "forecast"])
def test_a_pickled_payload_in_model_pt_never_runs(name, lgssm_run, sequences_csv, copy_run,
                                                    tmp_path, capsys):
    run = copy_run(lgssm_run)
    marker = tmp_path / "payload-ran"
    plant(run / "checkpoints" / "model.pt", marker)
    assert main(command(name, run, tmp_path, sequences_csv)) == 2
    err = one_line_error(capsys)
    assert "model.pt" in err and "io.open" in err and "refused" in err
    assert not marker.exists()
    torch.load(run / "checkpoints" / "model.pt", weights_only=False)   # the payload is live
    assert marker.exists()


@reliability("checkpoints", [
    ("last.pt carrying an object whose unpickling creates a file, read by train --resume",
     "exit 2, one line naming last.pt; the file is not created")])
def test_a_pickled_payload_in_last_pt_never_runs(dkf_run, sequences_csv, copy_run, tmp_path,
                                                   capsys):
    run = copy_run(dkf_run)
    marker = tmp_path / "payload-ran"
    plant(run / "checkpoints" / "last.pt", marker)
    assert main(dkf_args(sequences_csv, run, "--set", "max_steps=4", "--resume")) == 2
    err = one_line_error(capsys)
    assert "last.pt" in err and "refused" in err
    assert not marker.exists()


@reliability("checkpoints", [
    ("model.pt declaring data_dim = 10,000,000 for weights of one feature",
     "exit 2 naming data_dim and the first weight whose shape differs; no model of the "
     "declared size is ever built (checked on the meta device)")])
def test_declared_sizes_are_checked_against_the_weights_first(lgssm_run, copy_run,
                                                               monkeypatch, capsys):
    run = copy_run(lgssm_run)
    tamper(run / "checkpoints" / "model.pt", data_dim=10_000_000)
    built = []
    init = LGSSM.__init__

    def spy(self, config, data_dim, input_dim=0):
        built.append((data_dim, torch.empty(0).device.type))
        init(self, config, data_dim, input_dim)
    monkeypatch.setattr(LGSSM, "__init__", spy)
    assert main(["evaluate", str(run)]) == 2
    err = one_line_error(capsys)
    assert "data_dim=10000000" in err and "model.pt" in err and "shape" in err
    assert [device for dim, device in built if dim == 10_000_000] == ["meta"]


TAMPERED = [
    ("an unknown key in model_config", dict(model_config={"foo": 1}),
     "'model_config': unknown key 'foo'"),
    ("a model_config value of the wrong type", dict(model_config={"state_dim": "two"}),
     "'state_dim' must be an integer or null"),
    ("a model name that is not a string", dict(model=["lgssm"]),
     "'model' must be a string, got a list"),
    ("a model name other than config.json's", dict(model="dkf"),
     "holds model 'dkf', but"),
    ("data_dim given as text", dict(data_dim="2"), "'data_dim' must be an integer"),
    ("state_dict that is a list", dict(state_dict=[1, 2]),
     "'state_dict': expected a mapping"),
    ("a state_dict entry that is not a tensor", dict(state_dict={"emission_cov.raw": 1.0}),
     "'emission_cov.raw' is a float, not a tensor"),
    ("a standardizer of another width", dict(standardizer={"mean": [0.0], "std": [1.0]}),
     "'standardizer' has 1 features, data_dim is 2"),
    ("an unknown format version", dict(dynvae_checkpoint=99), "format version 99"),
]


@reliability("checkpoints", [(f"model.pt with {case}", f"exit 2, one line: ...{message}...")
                             for case, _, message in TAMPERED])
@pytest.mark.parametrize("case, changes, message", TAMPERED, ids=[c[0] for c in TAMPERED])
def test_tampered_checkpoint_entries_are_one_line_errors(case, changes, message, lgssm_run,
                                                         copy_run, capsys):
    run = copy_run(lgssm_run)
    tamper(run / "checkpoints" / "model.pt", **changes)
    assert main(["evaluate", str(run)]) == 2
    err = one_line_error(capsys)
    assert message in err and "model.pt" in err


@reliability("checkpoints", [
    ("model.pt lacking an entry (standardizer)", "exit 2: ...lacks ['standardizer']"),
    ("model.pt whose top level is a list", "exit 2: ...is not a dynvae checkpoint"),
    ("model.pt cut to its first 100 bytes", "exit 2: ...is corrupt or truncated..."),
    ("model.pt holding the text 'garbage'", "exit 2: ...or not a checkpoint at all")])
def test_incomplete_checkpoints_are_one_line_errors(lgssm_run, copy_run, capsys):
    run = copy_run(lgssm_run)
    path = run / "checkpoints" / "model.pt"
    payload = torch.load(path, weights_only=True)
    good = path.read_bytes()
    del payload["standardizer"]
    torch.save(payload, path)
    assert main(["evaluate", str(run)]) == 2
    assert "lacks ['standardizer']" in one_line_error(capsys)
    torch.save([1, 2], path)
    assert main(["evaluate", str(run)]) == 2
    assert "is not a dynvae checkpoint" in one_line_error(capsys)
    path.write_bytes(good[:100])
    assert main(["evaluate", str(run)]) == 2
    assert "is corrupt or truncated" in one_line_error(capsys)
    path.write_text("garbage")                         # not a checkpoint, not an object
    assert main(["evaluate", str(run)]) == 2
    err = one_line_error(capsys)
    assert "not a checkpoint at all" in err and "Python object" not in err


@reliability("checkpoints", [
    ("save_checkpoint given an object other than tensors and plain values",
     "TypeError naming the entry; nothing written")])
def test_only_data_can_be_saved(tmp_path):
    with pytest.raises(TypeError, match=r"payload\['extra'\] is a OpensAFile"):
        save_checkpoint(tmp_path / "c.pt", {"extra": OpensAFile(tmp_path / "m")})
    assert not (tmp_path / "c.pt").exists()
    save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(2), "n": [1, 2.0, "a", None]})
    assert load_checkpoint(tmp_path / "c.pt")["n"] == [1, 2.0, "a", None]


@reliability("checkpoints", [
    ("weights of every registered model with data_dim declared one larger than theirs",
     "CheckpointError naming a weight and both shapes; the true sizes pass (each model "
     "builds on the meta device)")])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_has_its_sizes_checked(name):
    from dynvae.train.run import check_sizes
    cls = model_class(name)
    config = cls.Config()
    state = cls.from_config(config, 3, 0).state_dict()
    check_sizes(cls, config, 3, 0, state, "checkpoint x.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint x\.pt: the declared sizes "
                                              r"\(data_dim=4, .* has shape \(.*\) in the file"):
        check_sizes(cls, config, 4, 0, state, "checkpoint x.pt")
