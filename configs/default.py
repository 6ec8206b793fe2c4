"""The offline default: an encoder-decoder on SCAN ``simple`` (generated locally, no download)."""

from transformer_jax.config_defaults import base_config


def get_config():
  config = base_config()
  config.num_train_steps = 1500
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  return config
