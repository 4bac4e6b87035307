"""Two gloo processes on localhost reach the parameters of one process on the same
global batches: the per-entry loss must be weighted by the *global* observed count."""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dynvae.train.trainer import TrainConfig, Trainer

from .tiny_model import ListDataset, TinyLinearDVAE, make_data

CONFIG = dict(lr=0.05, batch_size=5, max_steps=6, eval_every=3, patience=None,
              checkpoint_every=3, seed=2, dtype="float64", progress=False, missing_rate=0.25)


def _run(out_dir) -> dict:
    torch.manual_seed(0)
    model = TinyLinearDVAE(3, 2, analytic=True).double()
    data = make_data(27, T=10)  # uneven shards: batches of 5 split 3 + 2
    Trainer(model, TrainConfig(**CONFIG), out_dir).fit(ListDataset(data[:23]),
                                                       ListDataset(data[23:]))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        params = _run(out_dir)
        torch.save(params, f"{out_dir}/params_rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_single_process(tmp_path):
    single = _run(tmp_path / "single")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        ddp = torch.load(tmp_path / f"params_rank{rank}.pt")
        for key, value in single.items():
            torch.testing.assert_close(ddp[key], value, rtol=0, atol=1e-10, msg=key)
    assert (tmp_path / "checkpoints" / "last.pt").is_file()  # written by rank 0 only
    assert (tmp_path / "metrics.csv").is_file()
