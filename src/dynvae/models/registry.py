"""Model registry: name -> "module:Class". A new model is one file plus one line here.

Every registered class implements :class:`dynvae.models.base.DVAE` and offers
``Config`` (a dataclass) and ``from_config(config, data_dim, input_dim)``.
"""

from __future__ import annotations

import importlib

from dynvae.errors import ConfigError

MODELS: dict[str, str] = {
    "dkf": "dynvae.models.dkf:DeepKalmanFilter",
    "vrnn": "dynvae.models.vrnn:VRNN",
    "lgssm": "dynvae.models.lgssm:LGSSM",
    "gpvae": "dynvae.models.gpvae:GPVAE",
    "latent-sde": "dynvae.models.latent_sde:LatentSDE",
    "storn": "dynvae.models.storn:STORN",
    "srnn": "dynvae.models.srnn:SRNN",
    "rvae": "dynvae.models.rvae:RVAE",
    "dsae": "dynvae.models.dsae:DSAE",
    "latent-ode": "dynvae.models.latent_ode:LatentODE",
    "kvae": "dynvae.models.kvae:KVAE",
}


def model_class(name: str):
    """Import and return the model class registered under ``name``."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    module, cls = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)
