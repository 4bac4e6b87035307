"""One process of the multi-node test, started by torchrun: trains the tiny model on a
shard directory and saves its final parameters as ``OUT/params_rank{RANK}.pt``.

    python -m torch.distributed.run ... tests/train/multinode_worker.py SHARDS OUT
"""

from __future__ import annotations

import os
import sys

import torch

from dynvae.data.sharded import ShardedDataset
from dynvae.train.trainer import TrainConfig, Trainer
from tests.train.tiny_model import TinyLinearDVAE

CONFIG = dict(lr=0.05, batch_size=6, max_steps=9, eval_every=4, patience=None,
              checkpoint_every=3, seed=2, dtype="float64", progress=False, missing_rate=0.25)


def train(shards: str, out: str | None, resume: bool = False) -> dict:
    """The run every process (and the single-process reference) makes."""
    torch.manual_seed(0)
    model = TinyLinearDVAE(3, 2, analytic=True).double()
    data = ShardedDataset(shards)
    trainer = Trainer(model, TrainConfig(**CONFIG), out)
    trainer.fit(data.subset(range(23)), data.subset(range(23, 27)).to_memory(), resume=resume)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def die_at(step: int) -> None:
    """Make rank 1 exit abruptly (like a lost node) when it is about to take ``step``."""
    take_step = Trainer._train_step

    def dying(self, batch, indices, at, epoch, *rest):
        if self.world.rank == 1 and at + 1 == step:
            os._exit(17)
        return take_step(self, batch, indices, at, epoch, *rest)
    Trainer._train_step = dying


if __name__ == "__main__":
    torch.set_num_threads(1)
    if "--die-at" in sys.argv:
        die_at(int(sys.argv[sys.argv.index("--die-at") + 1]))
    shards, out = sys.argv[1], sys.argv[2]
    params = train(shards, out, resume="--resume" in sys.argv)
    torch.save(params, os.path.join(out, f"params_rank{os.environ['RANK']}.pt"))
