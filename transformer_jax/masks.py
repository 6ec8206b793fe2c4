"""Attention masks as pure functions.

Every mask is boolean and broadcastable to ``[batch, heads, q_len, kv_len]``; ``True`` means *may attend*.
Cross-attention masks come from the same functions, with query-side and key-side arguments taken from the
two different sequences. Combine masks with :func:`combine_masks` (logical and, broadcasting).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array


def causal_mask(length: int, kv_length: int | None = None) -> Array:
  """Lower-triangular mask ``bool[1, 1, length, kv_length]``: query ``i`` sees keys ``j <= i``."""
  kv_length = length if kv_length is None else kv_length
  return (jnp.arange(length)[:, None] >= jnp.arange(kv_length)[None, :])[None, None]


def padding_mask(query_valid: Array, key_valid: Array) -> Array:
  """Mask ``bool[batch, 1, q_len, kv_len]`` from validity ``bool[batch, q_len]`` and ``bool[batch, kv_len]``."""
  return (query_valid[:, :, None] & key_valid[:, None, :])[:, None]


def segment_mask(query_segment_ids: Array, key_segment_ids: Array) -> Array:
  """Packed-sequence mask ``bool[batch, 1, q_len, kv_len]``.

  Args:
    query_segment_ids: ``int[batch, q_len]``; 1, 2, ... per packed example, 0 on padding.
    key_segment_ids: ``int[batch, kv_len]``, same convention.

  A token attends only to tokens of its own segment; padding (id 0) attends to and is seen by nothing.
  """
  same = query_segment_ids[:, :, None] == key_segment_ids[:, None, :]
  real = (query_segment_ids[:, :, None] != 0) & (key_segment_ids[:, None, :] != 0)
  return (same & real)[:, None]


def position_causal_mask(query_positions: Array, key_positions: Array) -> Array:
  """Causal mask from explicit positions: ``bool[batch, 1, q_len, kv_len]``, true where ``key <= query``.

  Used for packed sequences (positions restart per segment; combine with :func:`segment_mask`) and for
  cached decoding, where queries sit at arbitrary absolute positions of the cache.
  """
  return (key_positions[:, None, :] <= query_positions[:, :, None])[:, None]


def combine_masks(*masks: Array | None) -> Array | None:
  """Logical and of the given masks (``None`` entries ignored), broadcasting; ``None`` if none given."""
  masks = [m for m in masks if m is not None]
  if not masks:
    return None
  out = masks[0].astype(bool)
  for m in masks[1:]:
    out = jnp.logical_and(out, m)
  return out
