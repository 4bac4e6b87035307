"""Parameter container of a linear Gaussian state-space model (pure data, no learning).

    z_0 ~ N(m0, P0)
    z_t = A_t z_{t-1} + B_t u_t + b_t + w_t,    w_t ~ N(0, Q_t),   t = 1..T-1
    x_t = H_t z_t     + D_t u_t + d_t + v_t,    v_t ~ N(0, R_t),   t = 0..T-1

Steps are indexed from 0. A time-varying parameter carries an explicit T axis
and is named in ``time_varying``; it is never guessed from ``ndim``. For the
transition (A, Q, B, b), entry ``t`` maps z_{t-1} to z_t, so entry 0 is unused:
this suits irregular sampling, where A_t = expm(F (t_t - t_{t-1})).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from torch import Tensor

from dynvae.errors import DataError
from dynvae.gaussian import batched_mv

# name -> number of trailing "event" dims (2 for matrices, 1 for vectors)
_EVENT_DIMS = {
    "initial_mean": 1, "initial_cov": 2,
    "transition_matrix": 2, "transition_cov": 2, "transition_bias": 1, "transition_input": 2,
    "emission_matrix": 2, "emission_cov": 2, "emission_bias": 1, "emission_input": 2,
}
TIME_VARYING_ALLOWED = frozenset(_EVENT_DIMS) - {"initial_mean", "initial_cov"}


@dataclass(frozen=True)
class LinearGaussianSSM:
    """Parameters of a linear Gaussian SSM.

    Attributes (S state dim, D observed dim, U input dim, T steps; any leading
    batch dims ``*b`` broadcast against the data's):
        initial_mean: (*b, S) m0.         initial_cov: (*b, S, S) P0.
        transition_matrix: A (*b, S, S), or (*b, T, S, S) if time-varying.
        transition_cov: Q (*b, S, S) or (*b, T, S, S).
        emission_matrix: H (*b, D, S) or (*b, T, D, S).
        emission_cov: R (*b, D, D) or (*b, T, D, D).
        transition_bias: b (*b, S) or (*b, T, S), optional.
        emission_bias: d (*b, D) or (*b, T, D), optional.
        transition_input: B (*b, S, U) or (*b, T, S, U), optional.
        emission_input: D (*b, D, U) or (*b, T, D, U), optional.
        time_varying: names of the fields above that carry a T axis.
    """

    initial_mean: Tensor
    initial_cov: Tensor
    transition_matrix: Tensor
    transition_cov: Tensor
    emission_matrix: Tensor
    emission_cov: Tensor
    transition_bias: Tensor | None = None
    emission_bias: Tensor | None = None
    transition_input: Tensor | None = None
    emission_input: Tensor | None = None
    time_varying: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "time_varying", frozenset(self.time_varying))
        unknown = self.time_varying - TIME_VARYING_ALLOWED
        if unknown:
            raise DataError(f"time_varying names unknown or non-varying fields: {sorted(unknown)}")
        for name in self.time_varying:
            if getattr(self, name) is None:
                raise DataError(f"{name} is listed in time_varying but is None")
        S = self.initial_mean.shape[-1]
        if self.initial_cov.shape[-2:] != (S, S):
            raise DataError(f"initial_cov must end in ({S}, {S}), "
                            f"got {tuple(self.initial_cov.shape)}")
        for name, want in (("transition_matrix", (S, S)), ("transition_cov", (S, S))):
            got = getattr(self, name).shape[-2:]
            if tuple(got) != want:
                raise DataError(f"{name} must end in {want}, "
                                f"got {tuple(getattr(self, name).shape)}")
        D = self.emission_matrix.shape[-2]
        if self.emission_matrix.shape[-1] != S:
            raise DataError(f"emission_matrix must end in (D, {S}), "
                            f"got {tuple(self.emission_matrix.shape)}")
        if tuple(self.emission_cov.shape[-2:]) != (D, D):
            raise DataError(f"emission_cov must end in ({D}, {D}), "
                            f"got {tuple(self.emission_cov.shape)}")

    @property
    def state_dim(self) -> int:
        return self.initial_mean.shape[-1]

    @property
    def obs_dim(self) -> int:
        return self.emission_matrix.shape[-2]

    def param_at(self, name: str, t: int) -> Tensor | None:
        """The value of parameter ``name`` at step ``t`` (drops the T axis if time-varying)."""
        value = getattr(self, name)
        if value is None or name not in self.time_varying:
            return value
        return value.select(value.ndim - _EVENT_DIMS[name] - 1, t)

    def with_time_axis(self, name: str, T: int) -> Tensor | None:
        """Parameter ``name`` with an explicit T axis, (*b, T, ...), broadcast if constant."""
        value = getattr(self, name)
        if value is None or name in self.time_varying:
            return value
        ev = _EVENT_DIMS[name]
        v = value.unsqueeze(value.ndim - ev)
        return v.expand(*v.shape[: v.ndim - ev - 1], T, *v.shape[v.ndim - ev:])

    def offsets(self, T: int, u: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        """Additive transition and emission offsets over time from biases and inputs.

        Args: u: optional (*batch, T, U) inputs.
        Returns: transition offsets (*, T, S) or None; emission offsets (*, T, D) or None.
        """
        def offset(bias_name: str, input_name: str) -> Tensor | None:
            out = self.with_time_axis(bias_name, T)
            gain = self.with_time_axis(input_name, T)
            if gain is not None:
                if u is None:
                    raise DataError(f"the model has {input_name} but no inputs u were given")
                if u.shape[-1] != gain.shape[-1]:
                    raise DataError(f"u has {u.shape[-1]} channels, "
                                    f"{input_name} expects {gain.shape[-1]}")
                contrib = batched_mv(gain, u)                      # (*, T, S|D)
                out = contrib if out is None else out + contrib
            return out
        return (offset("transition_bias", "transition_input"),
                offset("emission_bias", "emission_input"))

    def to(self, device=None, dtype=None) -> LinearGaussianSSM:
        kwargs = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "time_varying"}
        kwargs = {k: None if v is None else v.to(device=device, dtype=dtype)
                  for k, v in kwargs.items()}
        return replace(self, **kwargs)
