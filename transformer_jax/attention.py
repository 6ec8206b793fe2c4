"""Scaled dot-product attention: the one place where an attention implementation is chosen.

Layout everywhere is ``[batch, length, heads, head_dim]``, the layout of :func:`jax.nn.dot_product_attention`.
Modules call :func:`dot_product_attention` and never a kernel directly, so a faster implementation (cuDNN,
Pallas, chunked) is one new branch here. ``"shard_map"`` runs the ``"jax"`` kernel on each device's batch and heads
shard under :func:`jax.shard_map`, for kernels the compiler cannot partition itself.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
from jax import Array
from jax.sharding import PartitionSpec as P

Implementation = Literal["xla", "jax", "shard_map"]
QKV_AXES = ("batch", "length", "heads", "head_dim")  # logical axes of queries, keys, values and outputs
MASK_AXES = ("batch", "heads", None, None)  # of masks and biases; their size-1 (broadcast) dims stay whole


def split_heads(x: Array, num_heads: int) -> Array:
  """``[batch, length, heads * head_dim]`` -> ``[batch, length, heads, head_dim]``."""
  return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


def merge_heads(x: Array) -> Array:
  """``[batch, length, heads, head_dim]`` -> ``[batch, length, heads * head_dim]``."""
  return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def attention_weights(
    query: Array,
    key: Array,
    mask: Array | None = None,
    bias: Array | None = None,
) -> Array:
  """Softmax attention weights ``float32[batch, heads, q_len, kv_len]`` (float64 for float64 inputs).

  The softmax runs in float32 whatever the input dtype. Masked entries get weight exactly 0; a query whose keys
  are all masked gets an all-zero row (finite values and gradients, never NaN).

  Args:
    query: ``[batch, q_len, heads, head_dim]``.
    key: ``[batch, kv_len, heads, head_dim]``.
    mask: bool, broadcastable to ``[batch, heads, q_len, kv_len]``; True = may attend.
    bias: float, broadcastable to ``[batch, heads, q_len, kv_len]``, added to the logits.
  """
  dtype = jnp.promote_types(query.dtype, jnp.float32)  # float32, or float64 under x64 references
  scale = query.shape[-1] ** -0.5
  logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=dtype) * scale
  if bias is not None:
    logits = logits + bias.astype(dtype)
  if mask is None:
    return jax.nn.softmax(logits, axis=-1)
  logits = jnp.where(mask, logits, jnp.finfo(dtype).min)
  return jnp.where(mask, jax.nn.softmax(logits, axis=-1), 0.0)


def dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None = None,
    bias: Array | None = None,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    deterministic: bool = True,
    return_weights: bool = False,
    implementation: Implementation = "xla",
) -> Array | tuple[Array, Array]:
  """Scaled dot-product attention ``softmax(q k^T / sqrt(d) + bias) v``.

  Args:
    query: ``[batch, q_len, heads, head_dim]``.
    key: ``[batch, kv_len, heads, head_dim]``.
    value: ``[batch, kv_len, heads, head_dim]``.
    mask: bool, broadcastable to ``[batch, heads, q_len, kv_len]``; True = may attend.
    bias: float, broadcastable to ``[batch, heads, q_len, kv_len]``.
    dropout_rate: dropout on the attention weights (needs ``dropout_rng`` when not deterministic).
    dropout_rng: PRNG key for attention dropout.
    deterministic: disables dropout.
    return_weights: also return the float32 weights ``[batch, heads, q_len, kv_len]`` (after dropout).
    implementation: ``"xla"`` (einsum + float32 softmax; supports everything), ``"jax"``
      (:func:`jax.nn.dot_product_attention`, which may pick cuDNN on GPU; no dropout, no weights) or
      ``"shard_map"`` (``"jax"`` per device shard, see :func:`per_shard_attention`).

  Returns:
    ``[batch, q_len, heads, head_dim]`` in ``query.dtype`` (and the weights if ``return_weights``).
  """
  use_dropout = dropout_rate > 0.0 and not deterministic
  if implementation in ("jax", "shard_map") and (use_dropout or return_weights):
    raise ValueError(f"implementation={implementation!r} supports neither dropout nor return_weights; use 'xla'.")
  if implementation == "shard_map":
    return per_shard_attention(query, key, value, mask, bias)
  if implementation == "jax":
    if mask is not None:
      # jax.nn's softmax would spread fully masked rows uniformly; zero them as the "xla" path does.
      mask = jnp.broadcast_to(mask, (query.shape[0], query.shape[2], query.shape[1], key.shape[1]))
    out = jax.nn.dot_product_attention(query, key, value, bias=bias, mask=mask)
    return out if mask is None else jnp.where(mask.any(-1).transpose(0, 2, 1)[..., None], out, 0)
  if implementation != "xla":
    raise ValueError(f"Unknown attention implementation {implementation!r}; use 'xla', 'jax' or 'shard_map'.")
  weights = attention_weights(query, key, mask, bias)
  if use_dropout:
    if dropout_rng is None:
      raise ValueError("dropout_rng is required when dropout_rate > 0 and deterministic=False.")
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
  out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(value.dtype), value)
  return (out, weights) if return_weights else out


def per_shard_attention(query: Array, key: Array, value: Array, mask: Array | None = None,
                        bias: Array | None = None) -> Array:
  """The ``"jax"`` kernel on each device's shard of the batch (over ``data``, ``fsdp``) and heads (over
  ``tensor``) under :func:`jax.shard_map`, on the mesh being traced under (plain ``"jax"`` without one).

  Shapes as in :func:`dot_product_attention`; attention never mixes rows or heads, so no communication is needed.
  """
  from transformer_jax import sharding  # pylint: disable=import-outside-toplevel  (keeps this module free of Flax)

  kernel = functools.partial(dot_product_attention, implementation="jax")
  mesh = sharding.traced_mesh()
  if mesh is None:
    return kernel(query, key, value, mask, bias)
  spec = lambda x, names: P() if x is None else sharding.logical_to_spec(names, x.shape, mesh)
  in_specs = (*(spec(x, QKV_AXES) for x in (query, key, value)), spec(mask, MASK_AXES), spec(bias, MASK_AXES))
  return jax.shard_map(kernel, mesh=mesh, in_specs=in_specs, out_specs=spec(query, QKV_AXES))(
      query, key, value, mask, bias)
