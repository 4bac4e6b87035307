"""Training and model defaults chosen from the size of the data (one documented rule).

``dynvae train`` applies :func:`data_defaults` to every field the user did not give with
``--set``. The rule looks at the training set only: the number of sequences N, the
number of features D, and the median time step dt; it is the same for every dataset:

* batch size B = clip(N // 8, 8, 32): about eight steps per epoch on small sets, and
  batches large enough to average the noise of single sequences; on the CPU the cost of
  a step grows much more slowly than B (the sequential loops dominate), so larger
  batches are nearly free.
* learning rate 3e-3 (Adam with the trainer's gradient clipping): fixed budgets of
  minutes need a few hundred to a few thousand steps to be enough. A model's Config
  may name its own (a class attribute ``learning_rate``): the DKF's is 1e-2. Measured
  at 45 s, every deep model on six real sets at both rates (one session, two runs at
  a time), the DKF's imputation MSE at 3e-3 -> 1e-2: basic-motions 6.884 -> 6.174,
  japanese-vowels 0.002532 -> 0.002406 (now below linear interpolation's 0.002443),
  seattle-temps 0.1099 -> 0.0935, the chorales 0.03609 -> 0.02952 (linear
  interpolation 0.03466), healing-digits 0.04424 -> 0.0443, co2 0.1401 -> 0.1406. No
  other model was better at 1e-2 on most sets: the VRNN, GP-VAE, STORN, SRNN and
  latent ODE were worse on five or six of them, e.g. the VRNN on healing-digits 0.03865 ->
  0.06009, the latent ODE on seattle-temps 3.011 -> 26.46
  (docs/results/quality.md#learning-rate).
* a constant learning rate (``lr_schedule = "constant"``). The cosine decay to 5 % of lr
  over the run (``--set lr_schedule=cosine``) lost at fixed budgets of 45 s: imputation
  MSE of the DKF and the VRNN on basic-motions, japanese-vowels and seattle-temps was
  lower with the constant rate in 5 of the 6 runs (docs/results/quality.md); models
  still far from converged need the large steps until the end.
* parameter averaging: validation, early stopping, ``best.pt`` and the model a run ends
  with use an exponential moving average of the parameters with decay AVERAGE_DECAY =
  0.995, about the last 200 steps (``average_decay``; Polyak & Juditsky 1992): at the
  constant rate the iterates keep bouncing around the fit they found, and their average
  lies nearer to it. The optimisation itself is unchanged. Measured at 45 s, imputation
  MSE without -> with, on japanese-vowels: DKF 0.002979 -> 0.00274, GP-VAE 0.002939 ->
  0.002783, VRNN 0.004939 -> 0.004394, DSAE 0.002698 -> 0.002719; on seattle-temps: DKF
  0.2532 -> 0.2265, DSAE 1.027 -> 0.4932, VRNN 1.374 -> 0.9106, GP-VAE 0.09064 ->
  0.09269 (decays 0.99 and 0.998 scored between; docs/results/quality.md#parameter-averaging).
* the length of a run: at least MIN_STEPS = 4000 optimizer steps, max_epochs =
  max(100, ceil(4000 / steps per epoch)) (a set of 42 sequences in batches of 8 trains
  667 epochs, not 100); early stopping on the validation bound ends a run that stops
  improving sooner, and the best parameters are kept. Measured with the DKF
  (docs/results/quality.md#training-length): seattle-temps imputation MSE 0.652 after
  the former 100 epochs (600 steps), 0.424 after 2,000 steps, 0.128 after 4,000
  (linear interpolation 0.146); japanese-vowels 0.00281 (1,600 steps) -> 0.00246.
* a limit the user gives is the limit: with ``max_steps`` given, or a time budget
  (``max_seconds``, ``max_cpu_seconds``), and no ``max_epochs``, the number of epochs
  is not limited (early stopping still applies).
* KL warm-up over KL_WARMUP_STEPS = 500 optimizer steps (an eighth of MIN_STEPS), whatever
  the data's size (Bowman et al. 2016; Sonderby et al. 2016): the decoder learns to use
  the latents before the KL pulls them to the prior. The former ten epochs (50 to 500
  steps, 60-90 on the small real sets) were too short: at 45 s, imputation MSE with ten
  epochs -> 500 steps on seattle-temps: DKF 0.302 -> 0.225, VRNN 2.15 -> 0.90, GP-VAE
  0.239 -> 0.111, latent SDE 2.26 -> 0.60; on basic-motions: VRNN 7.89 -> 6.06, latent
  SDE 22.2 -> 9.56 (it had not left the prior), DKF 6.71 -> 6.91, GP-VAE 7.19 -> 7.28
  (docs/results/quality.md#kl-warm-up). A run shorter than the warm-up ends with
  beta < 1: a beta-weighted bound, still a bound.
* horizon warm-up over HORIZON_WARMUP_STEPS = 1000 optimizer steps (a quarter of
  MIN_STEPS) for models whose Config sets ``horizon_warmup = True`` (the latent ODE
  with ``segment_steps=None``; the default latent ODE restarts its path every 5 steps):
  training windows grow from 10 steps to whole sequences (``dynvae.train.augment``).
  Its whole path follows from one initial state; fitted to whole sequences of many
  periods it stayed at the per-feature mean. Measured at 45 s, latent ODE imputation
  MSE without -> with: seattle-temps (168 hourly steps, a daily cycle) 139.2 -> 9.19
  (29.5 in a second run with the windows),
  japanese-vowels 0.00893 -> 0.00864, chorales 0.0376 -> 0.0350, basic-motions 22.55
  -> 22.95 (docs/results/quality.md#horizon-warm-up).
* training windows: when the longest training sequence has more than LONG_SEQUENCE =
  128 steps, training reads windows of TRAIN_WINDOW = 64 consecutive steps
  (``train_window``; ceil(L / 64) windows of a sequence of L steps an epoch, at new
  random starts each epoch, ``dynvae.train.batching.TrainingWindows``), and N above
  counts windows; evaluation, imputation and forecasts still read whole sequences. A
  step over one whole long series costs as much as its length (one pass of every
  recurrence over 2,284 weekly CO2 values: ~1 s, 50 steps in 45 s) and gives one
  gradient; windows give batches of short ones. Measured at 45 s on co2 (one series),
  DKF imputation MSE whole series -> windows of 128, 64, 32 steps: 25.96 -> 0.151,
  0.1427, 0.1443 (linear interpolation 0.1413); VRNN windows of 128 -> 64: 0.416 ->
  0.355. On the sets of 168 and 24-193 steps (seattle-temps, the chorales), windows
  lowered the 45 s imputation MSE of all nine models that take them, e.g. seattle-temps
  DKF 0.2753 -> 0.1359, VRNN 1.246 -> 0.1308, GP-VAE 0.1004 -> 0.0797, chorales SRNN
  0.03666 -> 0.03512, GP-VAE 0.03748 -> 0.03509 (docs/results/quality.md#training-windows;
  basic-motions' 100 steps and japanese-vowels' 7-29 are read whole). Streamed data are
  cropped to one window a sequence an epoch. Not for a model whose whole path follows
  from one initial state (its Config sets ``horizon_warmup``, the one-path latent ODE): windows
  teach it paths of 64 steps that scoring the whole series extrapolates (co2 imputation
  MSE 118 -> 6203).
* hidden width W = clip(2^ceil(log2(8 D)), 32, 128) and latent size Z = clip(D, 4, 16):
  more features need wider networks and more latent dimensions.
* hide_from_encoder = 0.3: training hides 30 % of the observed entries from the inference
  network and still scores them (``dynvae.models.common.encoder_mask``), so what the
  model learns is to infer entries from their observed neighbours: imputation.
  hide_from_recurrence = 0.3 likewise hides entries of x_{t-1} from the generative
  recurrences of STORN and the SRNN, which otherwise never read an unseen entry before
  imputation shows them one: 45 s imputation MSE with / without on japanese-vowels
  SRNN 0.003362 / 0.004895, STORN 0.005628 / 0.007364, seattle-temps 1.112 / 3.962 and
  1.786 / 2.73 (docs/results/quality.md).
* the GP-VAE's initial lengthscale is 3 dt (the kernel learns it from there).
* the latent SDE's unit of time is dt (``time_unit``): its drift, diffusion and Girsanov
  KL see gaps of order one whatever the data's unit (seconds at 10 Hz gave gaps of 0.1,
  which its initial networks and KL treat very differently from gaps of 1); but at
  least a hundredth of the median span of what it trains on, a sequence or a training
  window (``MAX_HORIZON``), so that a sequence
  lasts at most ~100 units of model time: its untrained drift networks, integrated over
  a thousand units and more, overflow (1,000-step sequences read in steps gave a loss
  of 1.6e25 at the first step, 10,000-step ones NaN).

A model's configuration takes the width W for its fields named ``*_hidden``,
``hidden_size`` or ``feature_size`` (an int, or every layer of a tuple of sizes), and Z
for ``latent_dim``; a model whose Config defines ``sized_for(size)`` (returning a dict
of its fields) adds or replaces fields of its own. The KVAE's: pseudo-observations a_t of
Z dimensions and a state z_t of min(2 Z, 16) (``pseudo_dim``, ``state_dim``): with the
former fixed 2 and 4, twelve speech channels went through two numbers a frame. Measured
at 45 s, imputation MSE fixed -> sized: japanese-vowels 0.02317 -> 0.002474-0.002524
(linear interpolation 0.002443), seattle-temps 1.6 -> 0.3015, healing-digits 0.05512 ->
0.04658 (now below every baseline), basic-motions 10.94 -> 10.82, chorales 0.03709 ->
0.03754 (83 steps instead of 302: the Kalman recursions cost S^3 a step); a state of Z
scored 0.002573 on japanese-vowels and 1.658 on seattle-temps, whose daily cycle needs
two states per pseudo-dimension (docs/results/quality.md#kvae-sizes).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

LEARNING_RATE = 3e-3  # unless the model's Config names its own learning_rate
LR_SCHEDULE = "constant"
AVERAGE_DECAY = 0.995
UNLIMITED_EPOCHS = 1_000_000
MIN_STEPS = 4000
MIN_EPOCHS = 100
KL_WARMUP_STEPS = MIN_STEPS // 8
HORIZON_WARMUP_STEPS = MIN_STEPS // 4
HIDE_FROM_ENCODER = 0.3
TRAIN_WINDOW = 64      # steps of a training window on data of long sequences
LONG_SEQUENCE = 2 * TRAIN_WINDOW  # the longest training sequence above which training
#                                  uses windows
LENGTHSCALE_STEPS = 3.0
MAX_HORIZON = 100.0  # the longest median sequence span, in the latent SDE's time units
WIDTH_FIELDS = ("hidden_size", "feature_size")


@dataclass(frozen=True)
class DataSize:
    """What the rule reads from a training set: N sequences, D features, the median
    time step (1.0 for sequences of one step), the median span t_last - t_first of a
    sequence (0.0 when every sequence has one step), the longest sequence's steps and
    the mean number of TRAIN_WINDOW-step windows a sequence holds (ceil(L / TRAIN_WINDOW);
    read from the sequences at hand, e.g. a sample of a streamed set)."""

    n_sequences: int
    dim: int
    median_step: float
    median_span: float = 0.0
    max_length: int = 1
    windows_per_sequence: float = 1.0

    @classmethod
    def of(cls, dataset) -> DataSize:
        steps = np.concatenate([np.diff(s.t) for s in dataset.sequences])
        spans = np.array([float(s.t[-1] - s.t[0]) for s in dataset.sequences])
        lengths = np.array([len(s.t) for s in dataset.sequences], dtype=np.int64)
        return cls(len(dataset), dataset.dim, float(np.median(steps)) if steps.size else 1.0,
                   float(np.median(spans)) if spans.size else 0.0,
                   int(lengths.max()) if lengths.size else 1,
                   float(np.mean(-(-lengths // TRAIN_WINDOW))) if lengths.size else 1.0)

    @property
    def train_window(self) -> int:
        """TRAIN_WINDOW when the longest sequence has more than LONG_SEQUENCE steps, else 0
        (whole sequences)."""
        return TRAIN_WINDOW if self.max_length > LONG_SEQUENCE else 0

    def n_examples(self, windows: bool = True) -> int:
        """What an epoch reads: the sequences, or their windows when training uses them."""
        if not (windows and self.train_window):
            return self.n_sequences
        return round(self.n_sequences * self.windows_per_sequence)   # (>= 1 per sequence)

    @property
    def time_unit(self) -> float:
        """The latent SDE's unit of time: the median step, or a MAX_HORIZON-th of the
        median span of what training integrates over (a sequence, or a training window
        of train_window steps) where that is longer."""
        return max(self.median_step, self.example_span(self.train_window) / MAX_HORIZON)

    def example_span(self, window: int = 0) -> float:
        """The time a training example spans: the median sequence span, or that of a
        training window of ``window`` steps where it is shorter (0: whole sequences)."""
        if not window:
            return self.median_span
        return min(self.median_span, self.median_step * (window - 1))

    @property
    def batch_size(self) -> int:
        return self.batch_size_for()

    def batch_size_for(self, windows: bool = True) -> int:
        """B = clip(N // 8, 8, 32), N the sequences or windows an epoch reads."""
        return int(np.clip(self.n_examples(windows) // 8, 8, 32))

    @property
    def width(self) -> int:
        return int(np.clip(2 ** math.ceil(math.log2(8 * self.dim)), 32, 128))

    @property
    def latent_dim(self) -> int:
        return int(np.clip(self.dim, 4, 16))


def train_defaults(size: DataSize, given: set[str] = frozenset(),
                   horizon_warmup: bool = False, lr: float = LEARNING_RATE) -> dict[str, Any]:
    """TrainConfig fields of the rule (``given``: the fields the user set;
    ``horizon_warmup``: the model asks for growing training windows; ``lr``: the
    model's learning rate, LEARNING_RATE unless its Config names its own)."""
    windows = not horizon_warmup      # a path from one initial state: whole sequences
    batch_size = size.batch_size_for(windows)
    epoch = math.ceil(size.n_examples(windows) / batch_size)
    out = {"batch_size": batch_size, "lr": lr, "lr_schedule": LR_SCHEDULE,
           "train_window": size.train_window if windows else 0,
           "average_decay": AVERAGE_DECAY,
           "kl_anneal_steps": KL_WARMUP_STEPS,
           "horizon_warmup_steps": HORIZON_WARMUP_STEPS if horizon_warmup else 0}
    if "max_epochs" not in given:
        if given & {"max_steps", "max_seconds", "max_cpu_seconds"}:
            out["max_epochs"] = UNLIMITED_EPOCHS    # the user's limit is the limit
        else:
            out["max_epochs"] = max(MIN_EPOCHS, math.ceil(MIN_STEPS / epoch))
    return out


def model_defaults(config, size: DataSize) -> dict[str, Any]:
    """Fields of a model Config dataclass instance that the rule sets."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "latent_dim":
            out[f.name] = size.latent_dim
        elif f.name in ("hide_from_encoder", "hide_from_recurrence"):
            out[f.name] = HIDE_FROM_ENCODER
        elif f.name == "lengthscale":
            out[f.name] = float(f"{LENGTHSCALE_STEPS * size.median_step:.6g}")
        elif f.name == "time_unit":
            out[f.name] = float(f"{size.time_unit:.6g}")
        elif f.name.endswith("_hidden") or f.name in WIDTH_FIELDS:
            if isinstance(value, tuple):
                out[f.name] = (size.width,) * len(value)
            elif isinstance(value, int) and not isinstance(value, bool):
                out[f.name] = size.width
    if hasattr(config, "sized_for"):
        out.update(config.sized_for(size))
    return out


def data_defaults(configs: dict[str, Any], train, given: set[str]) -> dict[str, Any]:
    """``configs`` (section name -> Config dataclass: "model" and "train" or "fit") with
    the rule's values in every field not in ``given`` (the keys --set gave). Sections
    other than "model" and "train" (e.g. a self-fitting model's "fit") are kept."""
    size = DataSize.of(train)
    out = dict(configs)
    for section, rule in (("model", model_defaults), ("train", train_defaults)):
        if section not in configs:
            continue
        config, model = configs[section], configs.get("model")
        values = rule(config, size) if section == "model" else rule(
            size, given, bool(getattr(model, "horizon_warmup", False)),
            float(getattr(model, "learning_rate", LEARNING_RATE)))
        names = {f.name for f in dataclasses.fields(config)}
        chosen = {k: v for k, v in values.items() if k in names and k not in given}
        out[section] = dataclasses.replace(config, **chosen)
    return out
