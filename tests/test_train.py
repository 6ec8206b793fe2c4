"""The training loop: schedule, loss, gradient accumulation, end-to-end runs, resumption, configs."""

import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import ROOT, load_config, shrink

from transformer_jax import losses, optim, sharding, train_lib
from transformer_jax.models import TransformerConfig


def test_rsqrt_schedule_matches_the_paper():
  schedule = optim.rsqrt_schedule(512, 4000)
  for step in (1, 10, 3999, 4000, 4001, 100_000):  # the paper counts steps from 1; optax counts from 0
    expected = 512**-0.5 * min(step**-0.5, step * 4000**-1.5)
    np.testing.assert_allclose(schedule(step - 1), expected, rtol=1e-5)


def test_label_smoothed_loss_matches_direct_computation():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 7))
  targets = np.array([[1, 4, 0], [6, 2, 3]])
  eps, vocab = 0.1, 7
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  q = np.full((2, 3, vocab), eps / (vocab - 1))
  np.put_along_axis(q, targets[..., None], 1 - eps, axis=-1)
  expected = -(q * log_p).sum(-1) + (q * np.log(q)).sum(-1)  # cross-entropy minus the targets' entropy
  smoothed, nll = losses.cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(targets), eps)
  np.testing.assert_allclose(smoothed, expected, atol=1e-5)
  np.testing.assert_allclose(nll, -np.take_along_axis(log_p, targets[..., None], -1)[..., 0], atol=1e-5)
  sums = losses.token_metrics(jnp.asarray(logits, jnp.float32), jnp.asarray(targets), eps)
  assert sums["tokens"] == 5  # the padding target (0) is not counted
  np.testing.assert_allclose(sums["loss"], (expected * (targets != 0)).sum(), atol=1e-4)


def _state_and_step(objective="translation", accum=1, seed=0, **optimizer):
  cfg = TransformerConfig.tiny(dropout_rate=0.0)
  config = load_config("default")
  config.optimizer.update(**optimizer)
  tx, schedule = optim.make_optimizer(config.optimizer, cfg.d_model, 100)
  mesh = sharding.make_mesh(config)
  graphdef, state, _ = train_lib.create_train_state(objective, cfg, tx, seed, mesh)
  step = jax.jit(lambda s, b: train_lib.train_step(s, b, graphdef=graphdef, tx=tx, schedule=schedule,
                                                   label_smoothing=0.1, grad_accum_steps=accum))
  return state, step


def _batch(seed=0, rows=4):
  rng = np.random.default_rng(seed)
  inputs = rng.integers(4, 64, (rows, 7)).astype(np.int32)
  targets = rng.integers(4, 64, (rows, 6)).astype(np.int32)
  for i in range(rows):  # different amounts of padding per row, so per-row token counts differ
    inputs[i, 7 - i:] = 0
    targets[i, 6 - i:] = 0
  return {"inputs": jnp.asarray(inputs), "targets": jnp.asarray(targets)}


def test_gradient_accumulation_equals_one_big_batch():
  state, step1 = _state_and_step(accum=1)
  _, step2 = _state_and_step(accum=2)
  batch = _batch()
  s1, m1 = step1(state, batch)
  s2, m2 = step2(state, batch)
  np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
  np.testing.assert_allclose(m1["grad_norm"], m2["grad_norm"], rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), s1.params, s2.params)


def test_train_step_overfits_a_fixed_batch():
  state, step = _state_and_step(schedule="constant", learning_rate=3e-3)
  batch = _batch(1)
  first = None
  for _ in range(100):
    state, metrics = step(state, batch)
    first = float(metrics["loss"]) if first is None else first
  assert float(metrics["loss"]) < 0.3 * first
  assert int(state.step) == 100


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _check_average_of_checkpoints(workdir):
  """``workdir/averaged`` holds the element-wise mean of the params of checkpoints 3 and 6."""
  def params(name, step):
    path = os.path.join(workdir, name, str(step), "state")
    return ocp.StandardCheckpointer().restore(path)["params"]

  expected = jax.tree.map(lambda a, b: (a + b) / 2, params("checkpoints", 3), params("checkpoints", 6))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), params("averaged", 6), expected)


def test_end_to_end_checkpoints_metrics_and_exact_resume(tmp_path, tiny_scan_config):
  config = tiny_scan_config
  config.average_last_checkpoints = 2
  full = train_lib.train_and_evaluate(config, str(tmp_path / "full"))
  config.average_last_checkpoints = 0
  _check_average_of_checkpoints(tmp_path / "full")

  config.num_train_steps = 3  # interrupted after 3 steps, then the same command with 6 steps resumes
  train_lib.train_and_evaluate(config, str(tmp_path / "resumed"))
  config.num_train_steps = 6
  resumed = train_lib.train_and_evaluate(config, str(tmp_path / "resumed"))

  records = _metrics(tmp_path / "resumed")
  assert [r["step"] for r in records if "loss" in r] == [2, 3, 4, 6]  # logged every 2 steps and at the end
  evals = [r for r in records if "eval_loss" in r]
  assert evals and {"eval_loss", "eval_accuracy", "bleu", "exact_match"} <= set(evals[-1])
  assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == ["3", "6"]
  assert os.path.exists(tmp_path / "resumed" / "vocab.model")
  assert os.listdir(tmp_path / "resumed" / "tensorboard")
  # Resuming restored step, rng, optimizer and data position: the result equals the uninterrupted run.
  np.testing.assert_allclose(resumed["eval_loss"], full["eval_loss"], rtol=1e-5)
  np.testing.assert_allclose(resumed["loss"], full["loss"], rtol=1e-5)

  config.model.d_model = 48
  with pytest.raises(ValueError, match="another model.*d_model"):
    train_lib.train_and_evaluate(config, str(tmp_path / "resumed"))


def test_lm_default_config_runs_and_samples(tmp_path, capsys):
  config = shrink(load_config("lm_default"), steps=4)
  config.data.vocab_size = 256
  config.decode.update(num_samples=2, prompt_tokens=4, max_len=8)
  result = train_lib.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(result["eval_perplexity"])
  assert "Samples:" in capsys.readouterr().out


def test_objective_must_match_the_data(tmp_path, tiny_scan_config):
  tiny_scan_config.objective = "lm"
  with pytest.raises(ValueError, match="objective"):
    train_lib.train_and_evaluate(tiny_scan_config, str(tmp_path))


def test_mistyped_override_is_an_error_naming_the_key(tmp_path):
  result = subprocess.run([sys.executable, str(ROOT / "train.py"), f"--workdir={tmp_path}",
                           "--config.optimizer.learnig_rate=0.1"], capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert "learnig_rate" in result.stderr


@pytest.mark.parametrize("name", ["wmt14_ende_base", "wmt14_ende_big", "lm1b"])
def test_tfds_configs_run_two_steps_on_mock_data(tmp_path, name):
  """The WMT / lm1b configs cannot download here: run each for 2 steps on TFDS mock data, model shrunk."""
  from unittest import mock  # pylint: disable=import-outside-toplevel

  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  config = shrink(load_config(name), steps=2)
  config.data.update(vocab_size=200, max_eval_examples=8)
  config.decode.num_eval_examples = min(config.decode.num_eval_examples, 4)
  with tfds.testing.mock_data(num_examples=16), \
      mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True):
    result = train_lib.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(result["loss"]) and np.isfinite(result["eval_loss"])
  assert ("bleu" in result) == (config.objective == "translation")


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path, tiny_scan_config, monkeypatch):
  global_batch, calls = sharding.global_batch, []

  def batch_then_sigterm(*args):
    calls.append(1)
    if len(calls) == 4:  # the 4th step's batch: the step runs, then the loop saves and stops
      os.kill(os.getpid(), signal.SIGTERM)
    return global_batch(*args)

  monkeypatch.setattr(sharding, "global_batch", batch_then_sigterm)
  tiny_scan_config.update(num_train_steps=50, checkpoint_every_steps=100, eval_every_steps=100)
  train_lib.train_and_evaluate(tiny_scan_config, str(tmp_path))
  assert os.listdir(tmp_path / "checkpoints") == ["4"]
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is removed after training
