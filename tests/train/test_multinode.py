"""Two torchrun launchers on this machine simulate two nodes (c10d rendezvous, gloo):
they end with the parameters of one process trained on the same global batches."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dynvae.train.batching import StreamedData
from dynvae.train.checkpoint import load_checkpoint
from dynvae.train.trainer import TrainConfig, Trainer

from .multinode_worker import CONFIG
from .sharded_data import shard_tensor
from .tiny_model import TinyLinearDVAE, make_data

ROOT = Path(__file__).resolve().parents[2]


class GlobalBatches(StreamedData):
    """One process fed the union of what the ranks of a ``world``-process run read at
    each step: the global batches of that run."""

    def __init__(self, data, world: int) -> None:
        self.data, self.world = data, world

    def __len__(self) -> int:
        return len(self.data)

    def steps_per_epoch(self, batch_size, world_size):
        return self.data.steps_per_epoch(batch_size, self.world)

    def stream(self, seed, epoch, batch_size, world, start, dtype, device, num_workers=0):
        plan = self.data.epoch_plan(seed, epoch, batch_size, self.world)
        for step in range(start, len(plan[0])):
            indices = [i for rank in plan for i in rank[step]]
            yield indices, self.data.to_batch(indices, dtype=dtype, device=device)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(shards: Path, out: Path, *extra: str, fail: bool = False) -> None:
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT}",
               OMP_NUM_THREADS="1")
    port = _free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
           "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=dynvae",
           "--max_restarts=0", str(ROOT / "tests" / "train" / "multinode_worker.py"),
           str(shards), str(out), *extra]
    nodes = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    for node in nodes:
        log, _ = node.communicate(timeout=300)
        assert (node.returncode != 0) == fail, log[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_nodes_match_one_process_on_the_same_global_batches(tmp_path):
    data = shard_tensor(make_data(27, T=8), tmp_path, shards=4)
    out = tmp_path / "run"
    out.mkdir()
    _two_nodes(tmp_path / "shards", out)
    torch.manual_seed(0)
    model = TinyLinearDVAE(3, 2, analytic=True).double()
    Trainer(model, TrainConfig(**CONFIG), tmp_path / "single").fit(
        GlobalBatches(data.subset(range(23)), world=2), data.subset(range(23, 27)).to_memory())
    for rank in range(2):
        params = torch.load(out / f"params_rank{rank}.pt")
        for key, value in model.state_dict().items():
            torch.testing.assert_close(params[key], value, rtol=0, atol=1e-10, msg=key)
    # the second node dies at step 8 (last checkpoint: step 6); both restart with --resume
    lost = tmp_path / "lost"
    lost.mkdir()
    _two_nodes(tmp_path / "shards", lost, "--die-at", "8", fail=True)
    assert load_checkpoint(lost / "checkpoints" / "last.pt")["step"] == 6
    _two_nodes(tmp_path / "shards", lost, "--resume")
    for rank in range(2):
        resumed = torch.load(tmp_path / "lost" / f"params_rank{rank}.pt")
        for key, value in model.state_dict().items():
            torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-10, msg=key)
