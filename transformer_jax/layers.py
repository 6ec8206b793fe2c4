"""Flax NNX building blocks: embeddings, multi-head attention with a KV cache, feed-forward, encoder and
decoder layers.

Every parameter is created with logical axis names (``embed``, ``vocab``, ``heads``, ``head_dim``, ``mlp``)
stored as the ``out_sharding`` metadata of its ``nnx.Param``; :mod:`transformer_jax.sharding` maps them to
mesh axes with a table of rules, so the modules never mention a mesh. Layer outputs are constrained to batch
sharding with :func:`transformer_jax.sharding.constrain` (a no-op unless traced under a mesh).

Activations are ``[batch, length, d_model]`` in ``config.dtype``; parameters are stored in
``config.param_dtype`` and cast to ``config.dtype`` where used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import nnx
from jax import Array

from transformer_jax import masks, positions, sharding
from transformer_jax.attention import dot_product_attention

if TYPE_CHECKING:
  from transformer_jax.models import TransformerConfig

Rngs = nnx.Rngs | None


def param(rngs: nnx.Rngs, init, shape: tuple[int, ...], names: tuple[str, ...], dtype) -> nnx.Param:
  """A parameter of ``shape`` with logical axis ``names`` (one per dimension)."""
  return nnx.Param(init(rngs.params(), shape, dtype), out_sharding=names, eager_sharding=False)


def _dropout(x: Array, rate: float, deterministic: bool, rngs: Rngs) -> Array:
  if deterministic or rate == 0.0:
    return x
  return nnx.Dropout(rate)(x, deterministic=False, rngs=rngs)


class Embed(nnx.Module):
  """Token embedding ``[vocab, embed]``, scaled by ``sqrt(d_model)`` as in the paper; ``attend`` gives logits."""

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    self.config = config
    init = nnx.initializers.normal(stddev=config.d_model**-0.5)
    self.embedding = param(rngs, init, (config.vocab_size, config.d_model), ("vocab", "embed"), config.param_dtype)

  def __call__(self, ids: Array) -> Array:
    """``int[batch, length]`` -> ``[batch, length, d_model]``."""
    table = sharding.constrain(self.embedding[...].astype(self.config.dtype), ("vocab", "activation_embed"))
    return jnp.take(table, ids, axis=0) * jnp.sqrt(self.config.d_model).astype(self.config.dtype)

  def attend(self, x: Array) -> Array:
    """``[batch, length, d_model]`` -> logits ``float32[batch, length, vocab]`` against the embedding table."""
    table = self.embedding[...].astype(self.config.dtype)
    return jnp.einsum("bld,vd->blv", x, table, preferred_element_type=jnp.float32)


class Norm(nnx.Module):
  """LayerNorm or RMSNorm over the last axis (``config.norm``), statistics in float32."""

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.scale = param(rngs, nnx.initializers.ones_init(), (config.d_model,), ("embed",), config.param_dtype)
    if config.norm == "layernorm":
      self.bias = param(rngs, nnx.initializers.zeros_init(), (config.d_model,), ("embed",), config.param_dtype)

  def __call__(self, x: Array) -> Array:
    y = x.astype(jnp.float32)
    if self.config.norm == "layernorm":
      y = y - y.mean(-1, keepdims=True)
    y = y * jax.lax.rsqrt((y * y).mean(-1, keepdims=True) + 1e-6) * self.scale[...]
    if self.config.norm == "layernorm":
      y = y + self.bias[...]
    return y.astype(self.config.dtype)


class MultiHeadAttention(nnx.Module):
  """Multi-head attention (self or cross) on :func:`~transformer_jax.attention.dot_product_attention`.

  Projections are ``query/key/value: [embed, heads, head_dim]`` and ``out: [heads, head_dim, embed]``.

  Cached decoding: :meth:`init_cache` allocates ``cached_key``/``cached_value`` ``[batch, max_len, heads,
  head_dim]`` as ``nnx.Cache`` variables (so ``nnx.split`` yields them as a pytree); :meth:`decode` writes the
  keys/values of new tokens at their absolute positions and attends causally over the cache. For
  cross-attention, :meth:`init_cross_cache` projects the encoder output once and :meth:`decode_cross` reuses it.

  Set ``capture_weights = True`` to ``sow`` the attention weights ``[batch, heads, q_len, kv_len]`` as
  ``nnx.Intermediate`` named ``attention_weights`` (for attention plots).
  """

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    self.config = config
    d, h, hd = config.d_model, config.num_heads, config.head_dim
    init = nnx.initializers.xavier_uniform(in_axis=0, out_axis=(1, 2))
    self.query = param(rngs, init, (d, h, hd), ("embed", "heads", "head_dim"), config.param_dtype)
    self.key = param(rngs, init, (d, h, hd), ("embed", "heads", "head_dim"), config.param_dtype)
    self.value = param(rngs, init, (d, h, hd), ("embed", "heads", "head_dim"), config.param_dtype)
    out_init = nnx.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2)
    self.out = param(rngs, out_init, (h, hd, d), ("heads", "head_dim", "embed"), config.param_dtype)
    self.capture_weights = False

  def _project(self, kernel: nnx.Param, x: Array, pos: Array | None) -> Array:
    y = jnp.einsum("bld,dhk->blhk", x, kernel[...].astype(self.config.dtype))
    return positions.apply_rope(y, pos) if pos is not None else y

  def _rope(self, pos: Array | None) -> Array | None:
    return pos if self.config.positional == "rope" else None

  def key_value(self, inputs_kv: Array, kv_positions: Array | None = None) -> tuple[Array, Array]:
    """Projected keys and values ``[batch, kv_len, heads, head_dim]`` (RoPE applied to keys if configured)."""
    return self._project(self.key, inputs_kv, self._rope(kv_positions)), self._project(self.value, inputs_kv, None)

  def attend(
      self,
      inputs_q: Array,
      key: Array,
      value: Array,
      mask: Array | None,
      q_positions: Array | None = None,
      *,
      deterministic: bool = True,
      rngs: Rngs = None,
  ) -> Array:
    """Attend from ``inputs_q [batch, q_len, d_model]`` to projected ``key``/``value``; returns ``[batch, q_len, d_model]``."""
    query = self._project(self.query, inputs_q, self._rope(q_positions))
    rate = self.config.attention_dropout_rate
    use_dropout = not deterministic and rate > 0.0
    # Dropout and captured weights need the reference "xla" path; otherwise use the configured implementation.
    implementation = "xla" if use_dropout or self.capture_weights else self.config.attention_impl
    out = dot_product_attention(
        query, key, value, mask,
        dropout_rate=rate,
        dropout_rng=rngs.dropout() if use_dropout else None,
        deterministic=deterministic,
        return_weights=self.capture_weights,
        implementation=implementation,
    )
    if self.capture_weights:
      out, weights = out
      self.sow(nnx.Intermediate, "attention_weights", weights)
    return jnp.einsum("blhk,hkd->bld", out, self.out[...].astype(self.config.dtype))

  def __call__(
      self,
      inputs_q: Array,
      inputs_kv: Array,
      mask: Array | None = None,
      q_positions: Array | None = None,
      kv_positions: Array | None = None,
      *,
      deterministic: bool = True,
      rngs: Rngs = None,
  ) -> Array:
    """Full (uncached) attention: ``inputs_q [batch, q_len, d_model]``, ``inputs_kv [batch, kv_len, d_model]``,
    mask broadcastable to ``[batch, heads, q_len, kv_len]``, positions ``int[batch, len]`` (used by RoPE)."""
    key, value = self.key_value(inputs_kv, kv_positions)
    return self.attend(inputs_q, key, value, mask, q_positions, deterministic=deterministic, rngs=rngs)

  def init_cache(self, batch_size: int, max_len: int) -> None:
    """Allocates an empty self-attention KV cache for ``batch_size`` sequences of up to ``max_len`` tokens."""
    shape = (batch_size, max_len, self.config.num_heads, self.config.head_dim)
    self.cached_key = nnx.Cache(jnp.zeros(shape, self.config.dtype))
    self.cached_value = nnx.Cache(jnp.zeros(shape, self.config.dtype))

  def decode(self, x: Array, pos: Array) -> Array:
    """Cached causal self-attention for new tokens ``x [batch, t, d_model]`` at absolute positions ``pos int[batch, t]``.

    Keys/values are written into the cache at ``pos`` (positions past ``max_len`` are dropped), then each new
    token attends to every cached position ``<=`` its own.
    """
    key, value = self.key_value(x, pos)
    rows = jnp.arange(x.shape[0])[:, None]
    self.cached_key[...] = self.cached_key[...].at[rows, pos].set(key, mode="drop")
    self.cached_value[...] = self.cached_value[...].at[rows, pos].set(value, mode="drop")
    cache_pos = jnp.broadcast_to(jnp.arange(self.cached_key.shape[1]), self.cached_key.shape[:2])
    return self.attend(x, self.cached_key[...], self.cached_value[...], masks.position_causal_mask(pos, cache_pos), pos)

  def init_cross_cache(self, encoded: Array, encoded_valid: Array) -> None:
    """Projects the encoder output ``[batch, src_len, d_model]`` once; ``encoded_valid bool[batch, src_len]``."""
    key, value = self.key_value(encoded)
    self.cached_key, self.cached_value = nnx.Cache(key), nnx.Cache(value)
    self.cached_key_valid = nnx.Cache(encoded_valid)

  def decode_cross(self, x: Array) -> Array:
    """Cross-attention of new decoder tokens ``x [batch, t, d_model]`` to the cached encoder keys/values."""
    mask = self.cached_key_valid[...][:, None, None, :]
    return self.attend(x, self.cached_key[...], self.cached_value[...], mask)


class FeedForward(nnx.Module):
  """Position-wise ``Dense(mlp) -> activation -> Dense(d_model)`` with biases; kernels ``[embed, mlp]``, ``[mlp, embed]``."""

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    self.config = config
    init, zeros = nnx.initializers.xavier_uniform(), nnx.initializers.zeros_init()
    self.wi = param(rngs, init, (config.d_model, config.mlp_dim), ("embed", "mlp"), config.param_dtype)
    self.bi = param(rngs, zeros, (config.mlp_dim,), ("mlp",), config.param_dtype)
    self.wo = param(rngs, init, (config.mlp_dim, config.d_model), ("mlp", "embed"), config.param_dtype)
    self.bo = param(rngs, zeros, (config.d_model,), ("embed",), config.param_dtype)

  def __call__(self, x: Array) -> Array:
    dt = self.config.dtype
    h = x @ self.wi[...].astype(dt) + self.bi[...].astype(dt)
    h = jax.nn.relu(h) if self.config.activation == "relu" else jax.nn.gelu(h)
    return h @ self.wo[...].astype(dt) + self.bo[...].astype(dt)


class Sublayer(nnx.Module):
  """Residual wrapper: post-LN ``norm(x + dropout(f(x)))`` (the paper) or pre-LN ``x + dropout(f(norm(x)))``."""

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.norm = Norm(config, rngs=rngs)

  def __call__(self, f, x: Array, *, deterministic: bool, rngs: Rngs) -> Array:
    rate = self.config.dropout_rate
    if self.config.pre_norm:
      return x + _dropout(f(self.norm(x)), rate, deterministic, rngs)
    return self.norm(x + _dropout(f(x), rate, deterministic, rngs))


class EncoderLayer(nnx.Module):
  """Self-attention then feed-forward, each in a :class:`Sublayer`."""

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    self.self_attention = MultiHeadAttention(config, rngs=rngs)
    self.feed_forward = FeedForward(config, rngs=rngs)
    self.attention_sublayer = Sublayer(config, rngs=rngs)
    self.ff_sublayer = Sublayer(config, rngs=rngs)

  def __call__(self, x: Array, mask: Array | None, pos: Array, *, deterministic: bool = True, rngs: Rngs = None):
    """``x [batch, len, d_model]``, mask ``[batch, 1, len, len]``, ``pos int[batch, len]`` -> ``[batch, len, d_model]``."""
    attend = lambda y: self.self_attention(y, y, mask, pos, pos, deterministic=deterministic, rngs=rngs)
    x = self.attention_sublayer(attend, x, deterministic=deterministic, rngs=rngs)
    return sharding.constrain(self.ff_sublayer(self.feed_forward, x, deterministic=deterministic, rngs=rngs))


class DecoderLayer(nnx.Module):
  """Causal self-attention, optional cross-attention (encoder-decoder), feed-forward."""

  def __init__(self, config: TransformerConfig, *, cross_attention: bool, rngs: nnx.Rngs):
    self.self_attention = MultiHeadAttention(config, rngs=rngs)
    self.self_sublayer = Sublayer(config, rngs=rngs)
    if cross_attention:
      self.cross_attention = MultiHeadAttention(config, rngs=rngs)
      self.cross_sublayer = Sublayer(config, rngs=rngs)
    self.feed_forward = FeedForward(config, rngs=rngs)
    self.ff_sublayer = Sublayer(config, rngs=rngs)

  def __call__(
      self,
      x: Array,
      self_mask: Array | None,
      pos: Array,
      encoded: Array | None = None,
      cross_mask: Array | None = None,
      *,
      deterministic: bool = True,
      rngs: Rngs = None,
  ) -> Array:
    """Teacher-forced pass: ``x [batch, len, d_model]``, ``self_mask [batch, 1, len, len]``, ``pos int[batch, len]``,
    ``encoded [batch, src_len, d_model]``, ``cross_mask [batch, 1, len, src_len]``."""
    kw = dict(deterministic=deterministic, rngs=rngs)
    x = self.self_sublayer(lambda y: self.self_attention(y, y, self_mask, pos, pos, **kw), x, **kw)
    if encoded is not None:
      x = self.cross_sublayer(lambda y: self.cross_attention(y, encoded, cross_mask, **kw), x, **kw)
    return sharding.constrain(self.ff_sublayer(self.feed_forward, x, **kw))

  def decode(self, x: Array, pos: Array) -> Array:
    """Cached step for new tokens ``x [batch, t, d_model]`` at positions ``pos int[batch, t]`` (deterministic)."""
    kw = dict(deterministic=True, rngs=None)
    x = self.self_sublayer(lambda y: self.self_attention.decode(y, pos), x, **kw)
    if hasattr(self, "cross_attention"):
      x = self.cross_sublayer(self.cross_attention.decode_cross, x, **kw)
    return self.ff_sublayer(self.feed_forward, x, **kw)


class Embedder(nnx.Module):
  """Token embedding plus positions (sinusoidal or learned; RoPE is applied inside attention), then dropout."""

  def __init__(self, config: TransformerConfig, embed: Embed, *, rngs: nnx.Rngs):
    self.config = config
    self.embed = embed
    if config.positional == "learned":
      init = nnx.initializers.normal(stddev=0.02)
      self.position_embedding = param(rngs, init, (config.max_len, config.d_model), ("length", "embed"),
                                      config.param_dtype)

  def __call__(self, ids: Array, pos: Array, *, deterministic: bool = True, rngs: Rngs = None) -> Array:
    """``ids int[batch, len]``, ``pos int[batch, len]`` -> ``[batch, len, d_model]``."""
    x = self.embed(ids)
    if self.config.positional == "sinusoidal":
      x = x + positions.sinusoidal(pos, self.config.d_model).astype(x.dtype)
    elif self.config.positional == "learned":
      x = x + jnp.take(self.position_embedding[...].astype(x.dtype), pos, axis=0)
    return sharding.constrain(_dropout(x, self.config.dropout_rate, deterministic, rngs))
