"""Positional encodings as pure functions: sinusoidal (Vaswani et al. 2017) and rotary (RoPE, Su et al. 2021).

Learned positional embeddings are a parameter table and live in :mod:`transformer_jax.layers`.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array


def sinusoidal(positions: Array, d_model: int, max_timescale: float = 10_000.0) -> Array:
  """Sinusoidal encodings ``float32[..., d_model]`` for integer ``positions[...]`` (any shape), computed on the fly."""
  inv_freq = 1.0 / (max_timescale ** (jnp.arange(0, d_model, 2, dtype=jnp.float32) / d_model))
  angles = positions[..., None].astype(jnp.float32) * inv_freq
  out = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(*positions.shape, -1)
  return out[..., :d_model]


def apply_rope(x: Array, positions: Array, max_timescale: float = 10_000.0) -> Array:
  """Rotary position embedding on queries or keys.

  Args:
    x: ``[batch, length, heads, head_dim]`` with an even ``head_dim``.
    positions: ``int[batch, length]`` absolute positions.

  Returns:
    ``x`` with each pair ``(x[2i], x[2i+1])`` rotated by angle ``position / max_timescale^(2i/head_dim)``,
    computed in float32 and cast back to ``x.dtype``. Dot products of rotated queries and keys depend only on
    the relative position.
  """
  head_dim = x.shape[-1]
  inv_freq = 1.0 / (max_timescale ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles = positions[:, :, None, None].astype(jnp.float32) * inv_freq  # [b, l, 1, d/2]
  sin, cos = jnp.sin(angles), jnp.cos(angles)
  pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], head_dim // 2, 2)
  even, odd = pairs[..., 0], pairs[..., 1]
  rotated = jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
  return rotated.reshape(x.shape).astype(x.dtype)
