"""Streaming a shard directory: every sequence once per epoch over ranks and DataLoader
workers, a deterministic plan, and a run resumed mid-epoch equal to an uninterrupted one."""

import itertools

import pytest
import torch

from dynvae.train.checkpoint import load_checkpoint
from dynvae.train.distributed import World
from dynvae.train.trainer import TrainConfig, Trainer

from .sharded_data import shard_tensor
from .tiny_model import RecordingDVAE, TinyLinearDVAE, make_data


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return shard_tensor(make_data(29, T=8), tmp_path_factory.mktemp("s"), shards=5)


@pytest.mark.parametrize("world, batch_size", [(1, 5), (2, 6), (3, 5), (4, 29), (5, 2)])
def test_ranks_and_steps_cover_every_sequence_exactly_once(shards, world, batch_size):
    for seed, epoch in itertools.product((0, 7), (0, 1)):
        plan = shards.epoch_plan(seed, epoch, batch_size, world)
        assert len(plan) == world
        steps = {len(batches) for batches in plan}
        assert steps == {shards.steps_per_epoch(batch_size, world)}
        assert all(len(b) >= 1 for batches in plan for b in batches)
        seen = sorted(i for batches in plan for b in batches for i in b)
        assert seen == list(range(len(shards)))
        assert plan == shards.epoch_plan(seed, epoch, batch_size, world)   # deterministic
    assert shards.epoch_plan(0, 0, batch_size, world) != shards.epoch_plan(0, 1, batch_size,
                                                                           world)


def test_a_rank_reads_its_own_shards(shards):
    """Contiguous slices of a shard-ordered epoch: ranks share at most the shard where
    one slice ends and the next begins."""
    plan = shards.epoch_plan(3, 0, 4, 2)
    shard_of = shards._index.shard[shards.positions]
    read = [{int(shard_of[i]) for b in batches for i in b} for batches in plan]
    assert len(read[0] & read[1]) <= 1
    assert len(read[0]) + len(read[1]) <= len(set(shard_of.tolist())) + 1


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stream_yields_the_plan_in_order_with_workers(shards, num_workers):
    world = World(1, 2)
    expected = shards.epoch_plan(4, 2, 6, 2)[1][1:]
    got = list(shards.stream(4, 2, 6, world, 1, torch.float64, torch.device("cpu"),
                             num_workers))
    assert [indices for indices, _ in got] == expected
    for indices, batch in got:
        ref = shards.to_batch(indices, dtype=torch.float64)
        assert torch.equal(batch.x, ref.x) and torch.equal(batch.mask, ref.mask)


def _model(seed=0):
    torch.manual_seed(seed)
    return TinyLinearDVAE(3, 2).double()


def _config(**kw):
    base = dict(lr=0.02, batch_size=5, max_epochs=50, eval_every=3, patience=None,
                checkpoint_every=4, seed=3, dtype="float64", progress=False,
                kl_anneal_steps=5, missing_rate=0.2, n_samples=2)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_equals_an_uninterrupted_run(shards, tmp_path, workers):
    train = shards.subset(range(24))
    val = shards.subset(range(24, 29)).to_memory()
    assert train.steps_per_epoch(5, 1) == 5            # steps 8 and 14: mid-epoch 1 and 2
    Trainer(_model(), _config(max_steps=14), tmp_path / "a").fit(train, val)
    first = Trainer(_model(), _config(max_steps=8, num_workers=workers),
                    tmp_path / "b").fit(train, val)
    assert first.stopped == "max_steps"
    resumed = Trainer.resume(tmp_path / "b", _model(seed=5), train, val,
                             config=_config(max_steps=14, num_workers=workers))
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 14 and a["epoch"] == b["epoch"] == 2
    assert a["batch_in_epoch"] == b["batch_in_epoch"] == 4
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]
    assert len(resumed.history) == 14


def test_evaluation_batches_follow_length_except_for_streamed_data(shards, monkeypatch):
    """iterate_batches (the validation and test bounds) reads in-memory data in order of
    length, streamed shards in their own order (one read per shard)."""
    from dynvae.data.sharded import ShardedDataset
    from dynvae.train.metrics import iterate_batches
    from tests.train.test_trainer import _ragged

    def read_order(dataset):
        taken = []
        real = type(dataset).to_batch

        def recording(self, idx, **kw):
            taken.append(list(idx))
            return real(self, idx, **kw)
        monkeypatch.setattr(type(dataset), "to_batch", recording)
        batches = list(iterate_batches(dataset, 4, World(0, 1), torch.float64, "cpu"))
        monkeypatch.undo()
        assert sum(len(b) for b in taken) == len(dataset) == sum(b.batch_size for b in batches)
        return sum(taken, [])
    ragged = _ragged(11)
    assert read_order(ragged) == sorted(range(11), key=lambda i: ragged.lengths[i])
    assert read_order(ragged) != list(range(11))
    # the shards, given lengths that differ: still read in their order
    monkeypatch.setattr(ShardedDataset, "lengths", property(lambda self: list(range(29, 0, -1))))
    assert read_order(shards) == list(range(29))


def test_streamed_sequences_are_cropped_to_the_training_window(shards, tmp_path):
    """Streamed data plan their own batches: with train_window each sequence of a batch is
    cut to one window of that many steps (TrainingWindows is for indexed data)."""
    torch.manual_seed(0)
    model = RecordingDVAE(3, 2).double()
    train = shards.subset(range(24))
    Trainer(model, _config(max_steps=6, train_window=3, missing_rate=0.0),
            tmp_path / "w").fit(train)
    assert len(model.seen) == 6
    assert all(lengths == [3] * len(lengths) for _, lengths in model.seen)
