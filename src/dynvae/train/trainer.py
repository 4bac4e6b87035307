"""The gradient trainer for every model that maximises an ELBO (DKF, VRNN, GP-VAE, ...).

Adam on the per-entry loss ``-(log_lik - beta kl).sum() / n_obs.sum()``,
with gradient clipping, linear KL warm-up, early stopping on the validation bound
that keeps a *copy* of the best parameters, atomic checkpoints and an exact resume.
The same code runs under ``torchrun``: each process takes its share of every global
batch and DistributedDataParallel averages the gradients (see :meth:`Trainer._loss`).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dynvae.errors import CheckpointError, ConfigError, DataError
from dynvae.models.base import DVAE
from dynvae.nn.mlp import FreeVariance
from dynvae.nn.observation import BernoulliObservation
from dynvae.progress import shown
from dynvae.train import distributed as dist_utils
from dynvae.train.augment import crop_windows, drop_observed
from dynvae.train.batching import (
    StreamedData,
    TrainingWindows,
    epoch_batches,
    local_batches,
)
from dynvae.train.checkpoint import load_checkpoint, require_keys, save_checkpoint
from dynvae.train.collapse import collapse_report, free_bits_kl, kl_columns
from dynvae.train.history import kl_weight, write_metrics_csv
from dynvae.train.metrics import evaluate_elbo
from dynvae.train.schema import dataclass_from

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


LR_SCHEDULES = ("constant", "cosine")
LR_FLOOR = 0.05  # the cosine schedule's last learning rate, as a fraction of lr


def lr_factor(schedule: str, progress: float) -> float:
    """The learning rate's multiple at ``progress`` in [0, 1] of the run: 1 for
    "constant"; for "cosine", LR_FLOOR + (1 - LR_FLOOR) (1 + cos(pi progress)) / 2
    (Loshchilov & Hutter 2017, one cycle): large steps while the fit is coarse, small
    ones at the end, where a constant rate keeps the parameters bouncing around the
    minimum it has found."""
    if schedule == "constant":
        return 1.0
    p = min(max(progress, 0.0), 1.0)
    return LR_FLOOR + (1.0 - LR_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * p))


@dataclass
class TrainConfig:
    """Everything that determines a training run (saved with every checkpoint)."""

    lr: float = 1e-3  # Adam learning rate
    lr_schedule: str = "constant"  # constant, or cosine: lr decays to LR_FLOOR x lr over
    #                                the run (steps or time budget, whichever ends first)
    variance_lr: float = 10.0  # learning rate of free variances, as a multiple of lr
    batch_size: int = 20  # sequences per training step (all processes together)
    group_lengths: bool = False  # batches of sequences of similar length (less padding
    #                              on data of varying lengths, batches less mixed;
    #                              dynvae.train.batching.epoch_batches)
    max_epochs: int = 100  # passes over the training sequences
    max_steps: int | None = None  # None: limited by max_epochs only
    max_seconds: float | None = None  # wall-clock training budget; None: no limit
    max_cpu_seconds: float | None = None  # CPU-time budget of the process (fair on a
    #                                       shared machine); None: no limit
    grad_clip: float | None = 10.0  # max global gradient norm; None: no clipping
    kl_anneal_steps: int = 0  # linear beta warm-up 0 -> beta; 0: beta throughout
    beta: float = 1.0  # KL weight of the training loss after the warm-up (1: the ELBO)
    free_bits: float = 0.0  # KL floor in nats per latent dim per time step (0: none)
    collapse_threshold: float = 0.01  # KL per step below which a latent dim is inactive
    average_decay: float = 0.0  # decay of an exponential moving average of the
    #                             parameters, which validation, early stopping, best.pt
    #                             and the final model use (Polyak averaging); 0: the
    #                             last iterate
    eval_every: int = 100  # steps between validation bounds
    patience: int | None = 10  # evaluations without improvement before stopping
    checkpoint_every: int = 100  # steps between writes of checkpoints/last.pt
    seed: int = 0  # batch order, training noise and validation noise
    device: str = "cpu"  # cpu or cuda (dynvae train: --device)
    dtype: str = "float32"  # float32 or float64 parameters while training
    n_samples: int = 1  # Monte Carlo samples of the training ELBO
    eval_batch_size: int = 64  # sequences per batch of the validation bound
    missing_rate: float = 0.0  # extra observed entries hidden at random while training
    horizon_warmup_steps: int = 0  # steps over which training windows grow from
    #                                horizon_start steps to whole sequences; 0: whole
    #                                sequences throughout (dynvae.train.augment)
    horizon_start: int = 10  # steps of the first training windows
    train_window: int = 0  # train on windows of at most this many consecutive steps,
    #                        ceil(L / train_window) of a sequence of L steps an epoch
    #                        (dynvae.train.batching.TrainingWindows); 0: whole sequences
    num_workers: int = 0  # DataLoader worker processes assembling batches
    progress: bool = False  # a tqdm bar (the CLI turns it on)
    init_output_bias: bool = True  # a new run starts Bernoulli decoders at the log-odds
    #                                of each feature's training mean (output_bias_init)

    def __post_init__(self) -> None:
        positive = ("lr", "variance_lr", "batch_size", "max_epochs", "eval_every",
                    "checkpoint_every", "n_samples", "eval_batch_size", "beta")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_steps", "max_seconds", "max_cpu_seconds", "grad_clip", "patience"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"TrainConfig.{name} must be > 0 or None, got {value}")
        for name in ("kl_anneal_steps", "num_workers", "horizon_warmup_steps",
                     "train_window"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.horizon_start < 1:
            raise ConfigError(f"TrainConfig.horizon_start must be >= 1, got {self.horizon_start}")
        if not (self.free_bits >= 0 and self.collapse_threshold >= 0):
            raise ConfigError(f"TrainConfig.free_bits and collapse_threshold must be >= 0, "
                              f"got {self.free_bits}, {self.collapse_threshold}")
        if not 0.0 <= self.average_decay < 1.0:
            raise ConfigError(f"TrainConfig.average_decay must lie in [0, 1), "
                              f"got {self.average_decay}")
        if not 0.0 <= self.missing_rate < 1.0:
            raise ConfigError(f"TrainConfig.missing_rate must lie in [0, 1), "
                              f"got {self.missing_rate}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"TrainConfig.lr_schedule must be one of {list(LR_SCHEDULES)}, "
                              f"got {self.lr_schedule!r}")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"TrainConfig.dtype must be one of {sorted(_DTYPES)}, "
                              f"got {self.dtype!r}")
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ConfigError(f"TrainConfig.device must be cpu or cuda, got {self.device!r}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class TrainResult:
    """history: one dict per step; best_step/best_val: the best validation bound per
    step and when it was reached (None without validation data); stopped: why the
    loop ended (max_steps, max_epochs, max_seconds, max_cpu_seconds, early_stopping,
    non_finite);
    message: details."""

    history: list[dict]
    best_step: int | None
    best_val: float | None
    stopped: str
    message: str = ""


@dataclass
class _State:
    """The mutable part of a run, all of it saved in a checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_step: int | None = None
    best_val: float | None = None
    best_params: dict | None = None
    bad_evals: int = 0


class _BudgetBar:
    """The training progress bar, counting toward whichever budget ends the run first:
    steps (``max_steps``, or ``max_epochs`` worth of batches) or wall-clock seconds
    (``max_seconds``). With a time budget the bar runs in percent of the budget that is
    nearest to its end, so it reaches 100% when training stops either way."""

    def __init__(self, total_steps: int, max_seconds: float | None, step: int,
                 enabled: bool) -> None:
        self.total_steps, self.max_seconds = total_steps, max_seconds
        self.enabled = enabled
        self.shown = float(step) if max_seconds is None else 100.0 * step / total_steps
        if max_seconds is None:
            self.bar = tqdm(total=total_steps, initial=step, desc="train", unit="step",
                            dynamic_ncols=True, disable=shown(enabled))
        else:
            self.bar = tqdm(total=100.0, initial=100.0 * step / total_steps, desc="train",
                            unit="%", dynamic_ncols=True, disable=shown(enabled),
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| "
                            "[{elapsed}<{remaining}{postfix}]")

    def advance(self, step: int, seconds: float, loss: float) -> None:
        if self.max_seconds is None:
            self.bar.update(step - self.shown)
            self.shown = float(step)
            self.bar.set_postfix(loss=f"{loss:.4f}")
            return
        done = min(100.0, 100.0 * max(step / self.total_steps, seconds / self.max_seconds))
        self.bar.update(done - self.shown)
        self.shown = done
        limit = "time" if self._time_first(step, seconds) else "steps"
        self.bar.set_postfix_str(f"{self._where(step, seconds)} ({limit} first), "
                                 f"loss={loss:.4f}")

    def _time_first(self, step: int, seconds: float) -> bool:
        return (self.max_seconds is not None
                and seconds / self.max_seconds >= step / self.total_steps)

    def _where(self, step: int, seconds: float) -> str:
        """"step 50/2000, 480 s" or, when the time budget ends the run first at this pace
        (e.g. with no epoch limit), "step 50, 480/600 s": no step total that the run
        will not reach."""
        if self.max_seconds is None:
            return f"step {step}/{self.total_steps}, {seconds:.0f} s"
        if self._time_first(step, seconds):
            return f"step {step}, {seconds:.0f}/{self.max_seconds:g} s"
        return f"step {step}/{self.total_steps}, {seconds:.0f}/{self.max_seconds:g} s"

    def evaluated(self, step: int, seconds: float, loss: float, value: float | None = None,
                  best: float | None = None, best_step: int | None = None) -> None:
        """One plain status line per validation (every eval_every steps without
        validation data: the loss alone) on standard error where the bar is not drawn
        (output redirected to a log), so a long run shows how it goes."""
        if not self.enabled or not self.bar.disable:
            return
        line = f"train: {self._where(step, seconds)}, loss {loss:.4f}"
        if value is not None:
            line += (f", validation ELBO/step {value:.4f} (best {best:.4f} at step {best_step}; "
                     "standardised data)")
        print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()


def output_bias_init(model: nn.Module, train, clip: float = 1e-3) -> int:
    """Set the output bias of every Bernoulli decoder of ``model`` (a
    :class:`BernoulliObservation` with an affine output of the data's D features) to
    logit(p_d), p_d the mean of feature d over the observed training entries, clipped to
    [clip, 1 - clip] (0.5 for a feature never observed). Returns how many were set.

    A new model starts at p = 0.5 for every feature, and Adam moves a bias by about its
    learning rate per step: on sparse binary data (the chorales' piano rolls: a few of
    88 keys on) the biases need ~1,000 steps to reach the log-odds of the notes'
    frequencies, -0.8 to -6.9, and until then every model predicts little more than
    those frequencies. Streamed data (no in-memory sequences) are left as they are.
    """
    heads = [m for m in model.modules() if isinstance(m, BernoulliObservation)
             and isinstance(getattr(m, "logits", None), nn.Linear)]
    sequences = getattr(train, "sequences", None)
    if not heads or not sequences:
        return 0
    total = count = 0.0
    for sequence in sequences:                 # one sequence at a time: O(D) memory
        x = np.asarray(sequence.x, dtype=np.float64)
        seen = ~np.isnan(x)
        total = total + np.where(seen, x, 0.0).sum(0)
        count = count + seen.sum(0)
    p = np.where(count > 0, total / np.maximum(count, 1), 0.5)
    p = np.clip(p, clip, 1.0 - clip)
    n = 0
    for head in heads:
        if head.logits.out_features != p.size:
            continue
        with torch.no_grad():
            head.logits.bias.copy_(torch.as_tensor(np.log(p / (1.0 - p))))
        n += 1
    return n


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """Adam's parameter groups: the free variances (:class:`FreeVariance`, e.g. the
    default Gaussian emission's) at ``variance_lr`` x lr, everything else at lr.

    Below ~0.5 a variance softplus(raw) is about exp(raw), and Adam moves a parameter by
    about its learning rate per step, whatever the gradient's size: a variance starting
    at softplus(0) = 0.69 needs ~1,500 steps at lr 3e-3 to reach the ~0.01 of a
    well-fitted standardised series, and until then every residual is weighted as if
    it were noise. At 10 x lr it falls tenfold in ~80 steps (docs/results/quality.md:
    the DKF's imputation error on the Japanese vowels after 400 steps, 0.0082 -> 0.0045
    with the linear-fill encoder input).
    """
    free = {id(p) for m in model.modules() if isinstance(m, FreeVariance)
            for p in m.parameters()}
    rest = [p for p in model.parameters() if id(p) not in free]
    variances = [p for p in model.parameters() if id(p) in free]
    groups = [{"params": rest, "lr": config.lr}]
    if variances:
        groups.append({"params": variances, "lr": config.lr * config.variance_lr})
    return groups


class _ELBOModule(nn.Module):
    """Routes ``forward`` to ``model.elbo`` so that DDP sees the training pass."""

    def __init__(self, model: DVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch, n_samples: int):
        terms = self.model.elbo(batch, n_samples)
        # every trainable parameter enters the result (the unused ones times 0), so DDP
        # runs without find_unused_parameters: no extra graph traversal, no warning
        anchor = sum(p.sum() for p in self.model.parameters() if p.requires_grad)
        return terms._replace(kl=terms.kl + 0.0 * anchor)


class Trainer:
    """Fits a :class:`DVAE` by stochastic gradient ascent on its ELBO.

    Files (only when ``out_dir`` is given, written by rank 0): ``metrics.csv`` and
    ``checkpoints/{last,best}.pt``. Seed the model's initialisation yourself before
    building it (:func:`dynvae.utils.seed_everything`); the trainer seeds the rest.
    ``run_info``: plain values saved with every ``last.pt`` under ``"run"`` (e.g. the
    model's config and the data source), so that a resume can check it continues the
    same run.
    """

    def __init__(self, model: DVAE, config: TrainConfig | None = None,
                 out_dir: str | Path | None = None, run_info: dict | None = None) -> None:
        self.config = config or TrainConfig()
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.run_info = dict(run_info or {})
        self.device = torch.device(self.config.device)
        self.dtype = _DTYPES[self.config.dtype]
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but CUDA is not available")
        self.world = dist_utils.setup(self.device)
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.optimizer = torch.optim.Adam(param_groups(self.model, self.config),
                                          lr=self.config.lr)
        for group in self.optimizer.param_groups:  # what lr_schedule scales
            group["base_lr"] = group["lr"]
        self._wrapped = self._wrap(self.model)
        self._noise_state = self._seeded_noise_state()
        self._average: dict[str, torch.Tensor] | None = None   # see _update_average
        self._average_pairs = None             # (average, live) tensor lists, built once

    # ------------------------------------------------------------ public API
    @classmethod
    def resume(cls, out_dir: str | Path, model: DVAE, train, val=None,
               config: TrainConfig | None = None) -> TrainResult:
        """Continue the run in ``out_dir`` from ``checkpoints/last.pt`` (its saved config
        unless ``config`` is given, e.g. with a larger ``max_steps``)."""
        if config is None:
            path = Path(out_dir) / "checkpoints" / "last.pt"
            saved = load_checkpoint(path)
            require_keys(saved, {"config"}, path)
            config = dataclass_from(TrainConfig, saved["config"], f"{path}: 'config'",
                                    CheckpointError)
        return cls(model, config, out_dir).fit(train, val, resume=True)

    def fit(self, train, val=None, resume: bool = False) -> TrainResult:
        """Train on ``train`` (a SequenceDataset), validate and stop early on ``val``."""
        for name, part in (("train", train), ("val", val)):
            # what the trainer uses of a SequenceDataset: len() and to_batch(indices)
            if part is not None and not isinstance(part, StreamedData) and not (
                    hasattr(part, "to_batch") and hasattr(part, "__len__")):
                raise DataError(
                    f"Trainer.fit needs {name} as a SequenceDataset (dynvae.data: "
                    f"from_numpy, read_table, load_dataset) or streamed shards, got "
                    f"{type(part).__name__}")
        n_train = len(self._windows(train, 0))
        if n_train < max(1, self.world.size):
            raise ConfigError(f"the training set has {n_train} sequences (or windows), "
                              f"fewer than the {self.world.size} processes")
        if self.config.batch_size < self.world.size:
            raise ConfigError(f"batch_size {self.config.batch_size} is smaller than the "
                              f"{self.world.size} processes")
        state = self._load_last() if resume else _State()
        cfg = self.config
        if not resume and cfg.init_output_bias and output_bias_init(self.model, train) \
                and self.world.distributed:       # every process starts where rank 0 does
            for p in self.model.parameters():
                torch.distributed.broadcast(p.data, src=0)
        if cfg.average_decay > 0 and self._average is None:
            self._average = {k: v.detach().clone() for k, v in self._averaged_entries()}
            self._average_pairs = None
        total = cfg.max_steps or cfg.max_epochs * self._steps_per_epoch(train)
        bar = _BudgetBar(total, cfg.max_seconds, state.step,
                         enabled=cfg.progress and self.world.is_main)
        stopped, message, running = "max_epochs", "", None
        if self._reached_max_steps(state):
            stopped = "max_steps"
        if resume and cfg.progress and self.world.is_main:
            budget = f"; max_seconds counts from now ({cfg.max_seconds:g} s)" \
                if cfg.max_seconds else ""
            done = "; max_steps is reached: nothing left to train" \
                if stopped == "max_steps" else ""
            print(f"resuming from step {state.step} ({self._checkpoint_dir() / 'last.pt'})"
                  f"{budget}{done}", file=sys.stderr, flush=True)
        start, cpu_start = time.perf_counter(), time.process_time()
        self._clocks = (0.0, 0.0)
        streamed = isinstance(train, StreamedData)
        while state.epoch < cfg.max_epochs and stopped == "max_epochs":
            loader = self._epoch_loader(train, state)
            for indices, batch in loader:
                row = self._train_step(batch, indices, state.step, state.epoch,
                                       self._progress(state.step, total), streamed)
                row["seconds"] = time.perf_counter() - start
                row["cpu_seconds"] = time.process_time() - cpu_start
                state.history.append(row)
                if not math.isfinite(row["loss"]) or not math.isfinite(row["grad_norm"]):
                    stopped = "non_finite"
                    message = (f"non-finite loss or gradient at step {state.step + 1} "
                               f"(loss={row['loss']}, grad_norm={row['grad_norm']}); "
                               "stopped, the last good checkpoint is kept")
                    break
                state.step += 1
                state.batch_in_epoch += 1
                running = row["loss"] if running is None else 0.95 * running + 0.05 * row["loss"]
                bar.advance(state.step, row["seconds"], running)
                if val is not None and state.step % cfg.eval_every == 0:
                    if self._validate(val, state):
                        stopped, message = "early_stopping", (
                            f"no improvement of the validation bound in {cfg.patience} "
                            f"evaluations; best at step {state.best_step}")
                    bar.evaluated(state.step, row["seconds"], running,
                                  state.history[-1]["val_elbo_per_step"], state.best_val,
                                  state.best_step)
                elif val is None and state.step % cfg.eval_every == 0:
                    bar.evaluated(state.step, row["seconds"], running)
                if state.step % cfg.checkpoint_every == 0:
                    self._save_last(state)
                if stopped == "max_epochs" and self._reached_max_steps(state):
                    stopped = "max_steps"
                if stopped == "max_epochs":
                    stopped = self._out_of_time(row) or stopped
                if stopped != "max_epochs":
                    break
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
        bar.close()
        return self._finish(state, val, stopped, message)

    def _out_of_time(self, row: dict) -> str | None:
        """"max_seconds" or "max_cpu_seconds" when the step of history ``row`` (the wall
        and CPU times it records) used up that budget, else None. Same decision on every
        rank: rank 0's clocks are broadcast under DDP."""
        budgets = (self.config.max_seconds, self.config.max_cpu_seconds)
        if budgets == (None, None):
            return None
        elapsed = torch.tensor([row["seconds"], row["cpu_seconds"]], dtype=torch.float64)
        if self.world.distributed:
            elapsed = elapsed.to(self.device)
            torch.distributed.broadcast(elapsed, src=0)
        self._clocks = tuple(elapsed.tolist())      # also the pace of lr_schedule
        for name, budget, used in zip(("max_seconds", "max_cpu_seconds"), budgets,
                                      self._clocks, strict=True):
            if budget is not None and used >= budget:
                return name
        return None

    def _progress(self, step: int, total: int) -> float:
        """How far the run is, in [0, 1]: the furthest of steps over the step limit and
        time used over each time budget (the limit that ends the run sets the pace). The
        times are those :meth:`_out_of_time` read after the previous step (rank 0's
        under DDP, as they decide the end of the run)."""
        cfg = self.config
        if cfg.lr_schedule == "constant":
            return 0.0
        budgets = (cfg.max_seconds, cfg.max_cpu_seconds)
        fractions = [step / total] + [used / budget for budget, used in
                                      zip(budgets, self._clocks, strict=True) if budget]
        return min(1.0, max(fractions))

    def _reached_max_steps(self, state: _State) -> bool:
        return self.config.max_steps is not None and state.step >= self.config.max_steps

    # ----------------------------------------------------------- training step
    def _train_step(self, batch, indices: list[int], step: int, epoch: int,
                    progress: float = 0.0, streamed: bool = False) -> dict:
        cfg = self.config
        factor = lr_factor(cfg.lr_schedule, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        beta = kl_weight(step, cfg.kl_anneal_steps, cfg.beta)
        if streamed and cfg.train_window:       # indexed data come as TrainingWindows
            batch = crop_windows(batch, cfg.train_window, 0.0, cfg.seed, step, indices)
        if step < cfg.horizon_warmup_steps:
            batch = crop_windows(batch, cfg.horizon_start, step / cfg.horizon_warmup_steps,
                                 cfg.seed, step, indices)
        if cfg.missing_rate > 0:
            batch = drop_observed(batch, cfg.missing_rate, cfg.seed, step, indices)
        self.model.train()
        # anomaly detection slows every op several-fold: always off while training
        with self._noise_rng(), torch.autograd.set_detect_anomaly(False):
            loss_local, loss, kl_row = self._loss(batch, beta)
            if math.isfinite(loss):
                self.optimizer.zero_grad(set_to_none=True)
                loss_local.backward()
        grad_norm = math.nan
        if math.isfinite(loss):
            max_norm = cfg.grad_clip if cfg.grad_clip is not None else math.inf
            grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
            if math.isfinite(grad_norm):
                self.optimizer.step()
                self._update_average(step)
        return {"step": step + 1, "epoch": epoch, "loss": loss, "beta": beta,
                "grad_norm": grad_norm, "lr": self.optimizer.param_groups[0]["lr"], **kl_row}

    def _loss(self, batch, beta: float) -> tuple[torch.Tensor, float, dict]:
        """This rank's loss term, the global loss value and this rank's KL per time step
        (total and per latent dimension, for metrics.csv).

        The loss of a global batch is -sum_b(log_lik_b - beta kl_b) / N with N the
        observed entries of the *global* batch. DDP averages gradients over the W
        ranks, so each rank back-propagates W * (its own sum) / N: the average of
        those is exactly the gradient of the global loss, whatever the shard sizes.
        With free bits the KL of each latent dimension enters as max(its KL, floor), the
        floor being ``free_bits`` nats per time step of this rank's shard.
        """
        terms = self._wrapped(batch, self.config.n_samples)
        n_steps = batch.lengths.sum().to(terms.kl)
        kl = free_bits_kl(terms, n_steps, self.config.free_bits, type(self.model).__name__)
        local = -(terms.log_lik.sum() - beta * kl)
        n_obs = terms.n_obs.sum().to(torch.float64)
        neg_sum = local.detach().to(torch.float64)
        totals = dist_utils.all_reduce_sum(torch.stack([n_obs, neg_sum]), self.world)
        n_global = totals[0].clamp_min(1.0)
        loss_local = local * (self.world.size / n_global.to(local.dtype))
        return loss_local, float(totals[1] / n_global), kl_columns(terms, n_steps)

    @contextmanager
    def _noise_rng(self):
        """Run the model on this trainer's own RNG stream (reparametrisation noise,
        dropout), leaving the caller's global RNG untouched."""
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.set_rng_state(self._noise_state["cpu"])
            if cuda:
                torch.cuda.set_rng_state(self._noise_state["cuda"], self.device)
            yield
            self._noise_state = {"cpu": torch.get_rng_state()}
            if cuda:
                self._noise_state["cuda"] = torch.cuda.get_rng_state(self.device)

    def _seeded_noise_state(self) -> dict:
        seed = self.config.seed * 7_919 + 1 + self.world.rank
        state = {"cpu": torch.Generator().manual_seed(seed).get_state()}
        if self.device.type == "cuda":
            gen = torch.Generator(device=self.device).manual_seed(seed)
            state["cuda"] = gen.get_state()
        return state

    # ------------------------------------------------------- parameter average
    def _averaged_entries(self) -> list[tuple[str, torch.Tensor]]:
        """The model's floating-point state (parameters and buffers) that the average
        covers, as live views of its storage (what the optimizer updates in place)."""
        return [(k, v) for k, v in self.model.state_dict().items() if v.is_floating_point()]

    def _update_average(self, step: int) -> None:
        """After optimizer step ``step`` (0-based): average <- d average + (1 - d)
        parameters, with d = min(average_decay, (1 + step) / (10 + step)) so that the
        first steps' parameters (far from any fit) leave the average quickly."""
        if self._average is None:
            return
        decay = min(self.config.average_decay, (1.0 + step) / (10.0 + step))
        if self._average_pairs is None:     # live views stay valid: updates are in place
            live = dict(self._averaged_entries())
            self._average_pairs = ([self._average[k] for k in self._average],
                                   [live[k] for k in self._average])
        torch._foreach_lerp_(*self._average_pairs, 1.0 - decay)

    def _swap_average(self) -> None:
        """Exchange the model's parameters with the average (twice: back as before)."""
        live = dict(self._averaged_entries())
        with torch.no_grad():
            for name, avg in self._average.items():    # in place: the views stay valid
                held = live[name].clone()
                live[name].copy_(avg)
                avg.copy_(held)

    @contextmanager
    def _averaged(self):
        """The model holds the averaged parameters inside the block (a no-op without
        averaging)."""
        if self._average is None:
            yield
            return
        self._swap_average()
        try:
            yield
        finally:
            self._swap_average()

    # --------------------------------------------------------------- plumbing
    def _wrap(self, model: DVAE) -> nn.Module:
        wrapper = _ELBOModule(model)
        if not self.world.distributed:
            return wrapper
        from torch.nn.parallel import DistributedDataParallel
        ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(wrapper, device_ids=ids)

    def _epoch_loader(self, train, state: _State):
        """(indices, local batch) pairs of the rest of the current epoch: planned by the
        data itself when it streams (StreamedData), else a seeded permutation."""
        cfg = self.config
        if isinstance(train, StreamedData):
            return train.stream(cfg.seed, state.epoch, cfg.batch_size, self.world,
                                state.batch_in_epoch, self.dtype, self.device,
                                cfg.num_workers)
        train = self._windows(train, state.epoch)
        # a dataset without lengths (any object with __len__ and to_batch) is batched
        # by the plain permutation
        lengths = getattr(train, "lengths", None) if cfg.group_lengths else None
        batches = epoch_batches(len(train), cfg.batch_size, cfg.seed, state.epoch, lengths)
        return local_batches(train, batches[state.batch_in_epoch:], self.world, self.dtype,
                             self.device, cfg.num_workers)

    def _steps_per_epoch(self, train) -> int:
        if isinstance(train, StreamedData):
            return train.steps_per_epoch(self.config.batch_size, self.world.size)
        return math.ceil(len(self._windows(train, 0)) / self.config.batch_size)

    def _windows(self, train, epoch: int):
        """The indexed training set as this epoch's TrainingWindows when train_window is
        set; else (and for streamed data, cropped a batch at a time) ``train`` itself."""
        window = self.config.train_window
        if not window or isinstance(train, StreamedData):
            return train
        return TrainingWindows(train, window, self.config.seed, epoch)

    def _validate(self, val, state: _State) -> bool:
        """Evaluate, keep a deep copy of the best parameters; True when patience ran out."""
        cfg = self.config
        with self._averaged():
            summary = evaluate_elbo(self.model, val, batch_size=cfg.eval_batch_size,
                                    n_samples=cfg.n_samples, seed=cfg.seed, world=self.world)
            value = summary.per_step
            state.history[-1]["val_elbo_per_step"] = value
            # a non-finite bound (e.g. a solve that overflowed) is never the best
            better = math.isfinite(value) and (state.best_val is None or value > state.best_val)
            if better:
                state.best_params = copy.deepcopy(self.model.state_dict())
        if better:
            state.best_val, state.best_step, state.bad_evals = value, state.step, 0
            self._save_best(state)
            return False
        state.bad_evals += 1
        return cfg.patience is not None and state.bad_evals >= cfg.patience

    def _finish(self, state: _State, val, stopped: str, message: str) -> TrainResult:
        if stopped != "non_finite":
            # last.pt first: a final evaluation off the eval_every grid must not change
            # the state a resumed run continues from.
            self._save_last(state)
            last_evaluated = state.history and "val_elbo_per_step" in state.history[-1]
            if val is not None and state.history and not last_evaluated:
                self._validate(val, state)
        if state.best_params is not None:
            self.model.load_state_dict(state.best_params)
        elif self._average is not None and stopped != "non_finite":
            self._swap_average()                   # no validation: the averaged parameters
        self._write_csv(state)
        if message and self.world.is_main:
            print(f"dynvae: {message}")
        _, _, warning = collapse_report(state.history, self.config.kl_anneal_steps,
                                        self.config.collapse_threshold)
        if warning and self.world.is_main:
            print(f"dynvae: warning: {warning}", file=sys.stderr)
        return TrainResult(state.history, state.best_step, state.best_val, stopped, message)

    # ------------------------------------------------------------ checkpoints
    def _checkpoint_dir(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "checkpoints"

    def _save_last(self, state: _State) -> None:
        noise = dist_utils.all_gather_objects(self._noise_state, self.world)
        if self.out_dir is None or not self.world.is_main:
            return
        save_checkpoint(self._checkpoint_dir() / "last.pt", {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "step": state.step, "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch,
            "history": state.history, "best_step": state.best_step,
            "best_val": state.best_val, "best_params": state.best_params,
            "bad_evals": state.bad_evals, "noise_states": noise, "average": self._average,
            "world_size": self.world.size, "config": asdict(self.config),
            "run": self.run_info})
        self._write_csv(state)

    def _save_best(self, state: _State) -> None:
        if self.out_dir is None or not self.world.is_main:
            return
        save_checkpoint(self._checkpoint_dir() / "best.pt", {
            "model": state.best_params, "step": state.best_step,
            "best_val": state.best_val, "config": asdict(self.config)})

    def _write_csv(self, state: _State) -> None:
        if self.out_dir is not None and self.world.is_main:
            write_metrics_csv(self.out_dir / "metrics.csv", state.history)

    def _loaded_average(self, saved, path: Path) -> dict[str, torch.Tensor] | None:
        """The parameter average of a last.pt (None without averaging; a checkpoint
        written without one starts it from the loaded parameters, in :meth:`fit`)."""
        if self.config.average_decay == 0 or saved is None:
            return None
        live = dict(self._averaged_entries())
        if not isinstance(saved, dict) or set(saved) != set(live) or any(
                not isinstance(v, torch.Tensor) or v.shape != live[k].shape
                for k, v in saved.items()):
            raise CheckpointError(f"{path}: 'average' does not match the model's parameters")
        return {k: v.to(live[k]) for k, v in saved.items()}

    def _load_last(self) -> _State:
        ckpt_dir = self._checkpoint_dir()
        if ckpt_dir is None:
            raise ConfigError("resume needs the out_dir of the run to continue")
        path = ckpt_dir / "last.pt"
        ckpt = load_checkpoint(path, map_location=self.device)
        require_keys(ckpt, set(_LAST_KEYS) | {"model", "optimizer", "noise_states",
                                               "world_size"}, path)
        if ckpt["world_size"] != self.world.size:
            raise CheckpointError(f"{path} was written by {ckpt['world_size']} processes; "
                                  f"resume with as many (this run has {self.world.size})")
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            for group in self.optimizer.param_groups:  # checkpoints from before schedules
                group.setdefault("base_lr", group["lr"])
            noise = ckpt["noise_states"][self.world.rank]
            self._noise_state = {k: v.cpu() for k, v in noise.items()}
            self._average = self._loaded_average(ckpt.get("average"), path)
            self._average_pairs = None
            state = _State(**{key: ckpt[key] for key in _LAST_KEYS})
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError,
                AttributeError) as err:
            raise CheckpointError(f"{path} does not match the model: {err}") from err
        if not all(isinstance(getattr(state, k), int) and not isinstance(getattr(state, k), bool)
                   for k in ("step", "epoch", "batch_in_epoch", "bad_evals")) \
                or not isinstance(state.history, list):
            raise CheckpointError(f"{path}: step, epoch, batch_in_epoch and bad_evals must be "
                                  "integers and history a list")
        return state


# the _State fields a last.pt checkpoint holds under the same names
_LAST_KEYS = ("step", "epoch", "batch_in_epoch", "history", "best_step", "best_val",
              "best_params", "bad_evals")
