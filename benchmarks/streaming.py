"""Rows per second and peak memory of sharding and streaming vs the dataset's size.

For each size a long-format Parquet table is generated (sequences of 100 steps, 4
features, 10% missing; rows ordered by time then id, as a fleet of sensors logs them,
so every sequence is spread over the whole file). Each measurement runs in a fresh
Python process so that its peak RSS is its own (``VmHWM`` of /proc/self/status: the
high-water mark of the process image since its exec; ``ru_maxrss`` would also count
the benchmark's own memory, which a forked child carries until its exec):

* ``dynvae_shard``: ``write_shards`` (two passes, bounded memory);
* ``dynvae_stream``: one epoch of ``ShardedDataset.stream`` (batches of 64 sequences
  collated to float32 tensors, one process);
* ``dynvae_train``: ``dynvae train --model dkf --data SHARDS`` for 20 steps of 64
  sequences, evaluation included (the training memory is that of the streamed batches,
  the model and at most 200 validation/test sequences, whatever the table's size);
* ``dynvae_fit``: the same 20 training steps through the Trainer alone (no
  evaluation, no run directory);
* ``read_table``: the in-memory reader (the baseline: the whole table in memory).

    PYTHONPATH=src python benchmarks/streaming.py [--quick] [--json PATH]
      [--sizes 1e5,1e6,1e7] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STEPS, FEATURES = 100, 4
STREAM_BATCHES: int | None = None      # --stream-batches: a partial epoch


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """A table of rows // STEPS sequences of STEPS steps, written block by block."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    n_seq = max(1, rows // STEPS)
    rng = np.random.default_rng(seed)
    ids = np.array([f"sensor{i:08d}" for i in range(n_seq)], dtype=object)
    level = rng.normal(size=(n_seq, FEATURES))
    block = max(1, 1_000_000 // n_seq)                       # time steps per write
    with pq.ParquetWriter(path, _schema()) as writer:
        for k0 in range(0, STEPS, block):
            k = np.arange(k0, min(STEPS, k0 + block))
            n = len(k) * n_seq
            x = np.repeat(level[None], len(k), 0).reshape(n, FEATURES) \
                + rng.normal(size=(n, FEATURES))
            x[rng.random(x.shape) < 0.1] = np.nan
            cols = {"id": pa.array(np.tile(ids, len(k)), pa.string()),
                    "time": pa.array(np.repeat(k * 0.5, n_seq))}
            cols.update({f"f{d}": pa.array(x[:, d], from_pandas=True) for d in range(FEATURES)})
            writer.write_table(pa.table(cols))


def _schema():
    import pyarrow as pa
    return pa.schema([("id", pa.string()), ("time", pa.float64())]
                     + [(f"f{d}", pa.float64()) for d in range(FEATURES)])


def measure(case: str, table: Path, shards: Path, rows: int) -> dict:
    """Run ``case`` in this process; seconds, rows/s and this process's peak RSS."""
    import torch
    torch.set_num_threads(1)
    extra: dict = {}
    start = time.perf_counter()
    if case == "dynvae_shard":
        from dynvae.data.shard_writer import write_shards
        write_shards(table, shards, id_col="id", time_col="time",
                     shards=max(1, rows // 200_000), force=True)
        extra["input_mb"] = table.stat().st_size / 2 ** 20
        extra["shards_mb"] = sum(f.stat().st_size for f in shards.iterdir()) / 2 ** 20
    elif case == "dynvae_stream":
        from dynvae.data.sharded import ShardedDataset
        from dynvae.train.distributed import World
        data = ShardedDataset(shards)
        data = data.with_standardizer(data.fit_standardizer())
        seen = 0
        for k, (_, batch) in enumerate(data.stream(0, 0, 64, World(), 0, torch.float32,
                                                   torch.device("cpu"))):
            seen += int(batch.lengths.sum())
            if STREAM_BATCHES is not None and k + 1 == STREAM_BATCHES:
                break
        assert seen == rows or STREAM_BATCHES is not None, (seen, rows)
        extra["rows_streamed"] = seen                    # rows/s of what was read
    elif case == "dynvae_train":
        from dynvae.cli import main
        out = shards.parent / f"run_{rows}"
        code = main(["train", "--model", "dkf", "--data", str(shards), "--set", "max_steps=20",
                     "--set", "batch_size=64", "--set", "eval_every=20", "--set",
                     "progress=false", "--out", str(out), "--force"])
        assert code == 0
        with open(out / "metrics.csv") as f:                  # the training loop alone
            last = list(csv.DictReader(f))[-1]
        extra["train_loop_seconds"] = float(last["seconds"])
        extra["train_rows_per_s"] = 20 * 64 * STEPS / float(last["seconds"])
        extra["note"] = "rows_per_s: table rows / whole command; see train_rows_per_s"
        shutil.rmtree(out)
    elif case == "dynvae_fit":
        fit_only(shards)
        extra["train_rows_per_s"] = 20 * 64 * STEPS / (time.perf_counter() - start)
    elif case == "read_table":
        from dynvae.data import read_table
        read_table(table, id_col="id", time_col="time")
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    read = extra.get("rows_streamed", rows)
    return {"case": f"rows={rows:.0e}", "impl": case, "steps_per_sequence": STEPS,
            "seconds": seconds, "rows": rows, "rows_per_s": read / seconds,
            "peak_rss_mb": peak_mb, **extra}


def peak_rss_mb() -> float:
    """This process image's peak resident memory (VmHWM; ru_maxrss where /proc is
    missing, which may include a parent's memory at fork time)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024                      # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # KiB on Linux


def fit_only(shards: Path) -> None:
    """The training loop alone (no evaluation): a DKF of the CLI's default sizes,
    20 steps of 64 streamed sequences."""
    import torch

    from dynvae.data.sharded import ShardedDataset
    from dynvae.models.registry import model_class
    from dynvae.train.trainer import TrainConfig, Trainer
    data = ShardedDataset(shards)
    train = data.with_standardizer(data.fit_standardizer())
    torch.manual_seed(0)
    cls = model_class("dkf")
    model = cls.from_config(cls.Config(), data.dim, data.input_dim)
    Trainer(model, TrainConfig(batch_size=64, max_steps=20, progress=False)).fit(train)


def _child(case: str, table: Path, shards: Path, rows: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.setdefault("MPLBACKEND", "Agg")
    limit = [] if STREAM_BATCHES is None else ["--stream-batches", str(STREAM_BATCHES)]
    command = [sys.executable, __file__, "--steps", str(STEPS), *limit, "--measure", case,
               str(table), str(shards), str(rows)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{case} at {rows} rows failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    global STEPS, STREAM_BATCHES
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes 1e5 and 3e5")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--sizes", help="comma-separated row counts (default 1e5,1e6,1e7)")
    parser.add_argument("--in-memory-up-to", type=float, default=1e7,
                        help="largest size also read by read_table (default 1e7)")
    parser.add_argument("--cases", default="dynvae_shard,dynvae_stream,dynvae_fit,dynvae_train,"
                        "read_table",
                        help="comma-separated cases (sharding always runs first)")
    parser.add_argument("--keep", metavar="DIR", help="generate into DIR and keep it")
    parser.add_argument("--steps", type=int, default=STEPS,
                        help=f"steps per generated sequence (default {STEPS}; 10 gives "
                        "rows / 10 sequences: the per-sequence index at its largest)")
    parser.add_argument("--stream-batches", type=int, help="stream only the first N "
                        "batches of 64 sequences (a partial epoch, for the largest sizes)")
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    STEPS, STREAM_BATCHES = args.steps, args.stream_batches
    if args.measure:
        case, table, shards, rows = args.measure
        print(json.dumps(measure(case, Path(table), Path(shards), int(rows))))
        return
    sizes = [1e5, 3e5] if args.quick else [1e5, 1e6, 1e7]
    if args.sizes:
        sizes = [float(s) for s in args.sizes.split(",")]
    root = Path(args.keep or tempfile.mkdtemp(prefix="dynvae-streaming-"))
    root.mkdir(parents=True, exist_ok=True)
    print("torch threads: 1; each measurement in a fresh process; peak RSS = VmHWM "
          "of that process (includes the Python + torch import, ~0.3 GB)")
    rows_out = []
    try:
        for size in sizes:
            rows = int(size) // STEPS * STEPS
            table, shards = root / f"table_{rows}.parquet", root / f"shards_{rows}"
            start = time.perf_counter()
            generate(table, rows)
            print(f"rows={rows:.0e} ({rows // STEPS:.0e} sequences): generated "
                  f"{table.stat().st_size / 2**20:.0f} MB Parquet in "
                  f"{time.perf_counter() - start:.1f} s")
            wanted = args.cases.split(",")
            cases = ["dynvae_shard"] + [c for c in wanted if c != "dynvae_shard"]
            if rows > args.in_memory_up_to and "read_table" in cases:
                cases.remove("read_table")
            for case in cases:
                row = _child(case, table, shards, rows)
                if case not in wanted:
                    continue
                rows_out.append(row)
                loop = (f"  (training loop {row['train_rows_per_s']:,.0f} rows/s)"
                        if "train_rows_per_s" in row else "")
                print(f"  {case:14s} {row['seconds']:8.2f} s  {row['rows_per_s']:12,.0f} "
                      f"rows/s  peak RSS {row['peak_rss_mb']:7.0f} MB{loop}")
            if args.keep is None:
                table.unlink()
                shutil.rmtree(shards, ignore_errors=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows_out, indent=1))


if __name__ == "__main__":
    main()
