"""Shared fixtures. Tests run on the CPU; sharding tests start their own subprocesses with 8 host devices."""

import importlib.util
import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # pylint: disable=wrong-import-position

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(name: str):
  """``configs/<name>.py``'s ``get_config()``, as ``train.py --config`` would load it."""
  spec = importlib.util.spec_from_file_location(f"configs.{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def shrink(config, steps: int = 6):
  """A seconds-long version of any config: tiny model, tiny batches, few steps."""
  config.model.update(d_model=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, mlp_dim=64,
                      dropout_rate=0.0, max_len=64)
  config.data.update(batch_size=8, tokens_per_batch=0, eval_batch_size=8, max_eval_examples=16, max_length=32)
  config.update(num_train_steps=steps, log_every_steps=2, eval_every_steps=steps, checkpoint_every_steps=3)
  config.decode.update(num_eval_examples=8, max_len=24, beam_size=min(config.decode.beam_size, 2))
  return config


@pytest.fixture
def tiny_scan_config():
  return shrink(load_config("default"))
