"""Learning-rate schedules and the Optax optimizer built from ``config.optimizer``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def rsqrt_schedule(d_model: int, warmup_steps: int, scale: float = 1.0) -> optax.Schedule:
  """The paper's schedule ``scale * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)`` (1-based steps)."""

  def schedule(count):
    step = jnp.asarray(count, jnp.float32) + 1.0
    return scale * d_model**-0.5 * jnp.minimum(jax.lax.rsqrt(step), step * warmup_steps**-1.5)

  return schedule


def make_schedule(config: ml_collections.ConfigDict, d_model: int, num_train_steps: int) -> optax.Schedule:
  """``config.schedule``: ``"rsqrt"`` (the paper; ``learning_rate`` scales it), ``"warmup_cosine"`` or ``"constant"``."""
  if config.schedule == "rsqrt":
    return rsqrt_schedule(d_model, config.warmup_steps, config.learning_rate)
  if config.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, config.warmup_steps,
                                              max(num_train_steps, config.warmup_steps + 1))
  if config.schedule == "constant":
    return optax.constant_schedule(config.learning_rate)
  raise ValueError(f"optimizer.schedule={config.schedule!r} is unknown; use 'rsqrt', 'warmup_cosine' or 'constant'.")


def decay_mask(params):
  """Weight decay applies to matrices (kernels, embeddings) and skips biases and norm scales (ndim < 2)."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(config: ml_collections.ConfigDict, d_model: int, num_train_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Adam or AdamW (``config.name``) with the schedule, optional global-norm clipping (``clip_norm > 0``)."""
  if config.name not in ("adam", "adamw"):
    raise ValueError(f"optimizer.name={config.name!r} is unknown; use 'adam' or 'adamw'.")
  schedule = make_schedule(config, d_model, num_train_steps)
  weight_decay = config.weight_decay if config.name == "adamw" else 0.0
  tx = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=weight_decay,
                   mask=decay_mask)
  if config.clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(config.clip_norm), tx)
  return tx, schedule
