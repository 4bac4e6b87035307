"""Small, fast configurations of every registered model, for the contract suite
(tests/models/test_contract.py). A model added to dynvae.models.registry.MODELS adds its
entry here: the suite fails, naming the model, while one is missing.

VARIANTS adds configurations of a registered model that take another code path (the
DKF's posterior flow), checked by the same suite under their own case name.

Each entry is a mapping of the model's Config fields (as in a run's config.json) that
keeps one ELBO of 3 sequences x 6 steps x 2 channels in the milliseconds.
"""

SMALL_CONFIGS: dict[str, dict] = {
    "dkf": dict(latent_dim=2, encoder="backward", encoder_hidden=5, transition_hidden=(5,),
                emission_hidden=(5,), initial_prior="learned", n_predict_samples=4),
    "vrnn": dict(latent_dim=2, hidden_size=5, feature_size=4, mlp_hidden=(5,),
                 n_predict_samples=4),
    "lgssm": dict(state_dim=2, transition="linear", emission="linear", initial="learned",
                  transition_bias=True, emission_bias=True, inference="sequential"),
    "gpvae": dict(latent_dim=2, encoder_hidden=(5,), emission_hidden=(5,),
                  learn_kernel_variance=True, n_predict_samples=4),
    "storn": dict(latent_dim=2, hidden_size=5, encoder_hidden=4, mlp_hidden=(5,),
                  n_predict_samples=4),
    "srnn": dict(latent_dim=2, hidden_size=5, encoder_hidden=4, mlp_hidden=(5,),
                 n_predict_samples=4),
    "rvae": dict(latent_dim=2, hidden_size=5, encoder_hidden=4, mlp_hidden=(5,),
                 n_predict_samples=4),
    "dsae": dict(latent_dim=2, static_dim=2, hidden_size=5, encoder_hidden=4,
                 mlp_hidden=(5,), n_predict_samples=4),
    "latent-sde": dict(latent_dim=2, context_dim=3, encoder_hidden=4, drift_hidden=(5,),
                       diffusion_hidden=3, emission_hidden=(4,), dt=0.25,
                       n_predict_samples=4),
    "kvae": dict(state_dim=2, pseudo_dim=2, n_matrices=2, dynamics_hidden=3,
                 encoder_hidden=(5,), emission_hidden=(5,), n_predict_samples=4),
    "latent-ode": dict(latent_dim=2, encoder_hidden=4, encoder_field_hidden=(4,),
                       field_hidden=(5,), emission_hidden=(4,), solver="rk4", dt=0.3,
                       segment_steps=2, hide_from_encoder=0.3, n_predict_samples=4),
}

# case name -> (registered model, config): run through the whole suite as well
VARIANTS: dict[str, tuple[str, dict]] = {
    "dkf-iaf": ("dkf", dict(SMALL_CONFIGS["dkf"], posterior_flow=2, flow_hidden=4)),
    "storn-bidirectional": ("storn", dict(SMALL_CONFIGS["storn"], encoder="bidirectional")),
    "latent-ode-one-path": ("latent-ode", dict(SMALL_CONFIGS["latent-ode"], segment_steps=None)),
}
