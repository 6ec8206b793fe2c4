"""The Transformer models: ``TransformerConfig``, ``Encoder``, ``Decoder``, ``EncoderDecoder``, ``DecoderOnly``.

Batches follow the packed-batch contract of :mod:`transformer_jax.data`: token ids ``int32[batch, len]`` with 0
as padding, and optionally ``*_segmentation`` (1, 2, ... per packed example, 0 on padding) and ``*_position``
(restarting at 0 in each segment). Without them, every row is one sequence. Targets are shifted right inside
the model (BOS at each segment start), so ``logits[:, t]`` predicts ``targets[:, t]``.

Cached decoding: ``model.init_cache(...)`` allocates ``nnx.Cache`` state, ``model.decode_step(ids)`` feeds new
tokens; :func:`tokens_to_logits_fn` turns a model with a cache into the ``tokens_to_logits(ids, cache)``
callback that :mod:`transformer_jax.decoding` drives.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp
from flax import nnx
from jax import Array

from transformer_jax import masks
from transformer_jax.layers import DecoderLayer, Embed, Embedder, EncoderLayer, Norm, Rngs, param
from transformer_jax.tokens import BOS_ID

_CHOICES = {
    "positional": ("sinusoidal", "learned", "rope"),
    "norm": ("layernorm", "rmsnorm"),
    "activation": ("relu", "gelu"),
    "attention_impl": ("xla", "jax", "shard_map"),
}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyper-parameters of every model (frozen and hashable, so it can be a static jit argument).

  Attributes:
    vocab_size: size of the (shared) vocabulary.
    d_model: model width; ``num_heads`` must divide it.
    num_heads: attention heads; ``head_dim = d_model // num_heads``.
    num_encoder_layers: encoder depth (unused by ``DecoderOnly``).
    num_decoder_layers: decoder depth.
    mlp_dim: hidden width of the feed-forward blocks.
    dropout_rate: dropout on embeddings+positions and on every sub-layer output (the paper's P_drop).
    attention_dropout_rate: dropout on attention weights.
    max_len: longest sequence (learned positions table size; default decoding length).
    positional: ``"sinusoidal"`` (the paper), ``"learned"`` or ``"rope"``.
    norm: ``"layernorm"`` or ``"rmsnorm"``.
    pre_norm: False = post-LN (the paper), True = pre-LN (with a final norm).
    activation: ``"relu"`` (the paper) or ``"gelu"``.
    share_embeddings: one embedding table for source and target (encoder-decoder).
    logits_via_embedding: output logits through the (target) embedding matrix.
    dtype: compute dtype (e.g. ``jnp.bfloat16``); softmax and norms run in float32 regardless.
    param_dtype: parameter storage dtype (keep float32 for mixed precision).
    attention_impl: ``"xla"``, ``"jax"`` or ``"shard_map"`` (see
      :func:`transformer_jax.attention.dot_product_attention`).
    bos_id: the start token inserted by the right shift.
  """

  vocab_size: int
  d_model: int = 512
  num_heads: int = 8
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  mlp_dim: int = 2048
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.0
  max_len: int = 256
  positional: str = "sinusoidal"
  norm: str = "layernorm"
  pre_norm: bool = False
  activation: str = "relu"
  share_embeddings: bool = True
  logits_via_embedding: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention_impl: str = "xla"
  bos_id: int = BOS_ID

  def __post_init__(self):
    object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
    object.__setattr__(self, "param_dtype", jnp.dtype(self.param_dtype))
    for field, allowed in _CHOICES.items():
      if getattr(self, field) not in allowed:
        raise ValueError(f"TransformerConfig.{field}={getattr(self, field)!r} is unknown; use one of {allowed}.")
    for field in ("vocab_size", "d_model", "num_heads", "mlp_dim", "max_len"):
      if getattr(self, field) <= 0:
        raise ValueError(f"TransformerConfig.{field}={getattr(self, field)} must be positive.")
    if self.d_model % self.num_heads:
      raise ValueError(f"TransformerConfig.num_heads={self.num_heads} does not divide d_model={self.d_model}; "
                       "choose num_heads among the divisors of d_model.")
    if self.positional == "rope" and self.head_dim % 2:
      raise ValueError(f"positional='rope' needs an even head_dim, got d_model/num_heads={self.head_dim}.")
    for field in ("dropout_rate", "attention_dropout_rate"):
      if not 0.0 <= getattr(self, field) < 1.0:
        raise ValueError(f"TransformerConfig.{field}={getattr(self, field)} must be in [0, 1).")

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @classmethod
  def base(cls, **overrides) -> TransformerConfig:
    """The paper's base model: N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1 (~63 M params with a 37k vocab)."""
    return cls(**{"vocab_size": 37_000, **overrides})

  @classmethod
  def big(cls, **overrides) -> TransformerConfig:
    """The paper's big model: d_model=1024, d_ff=4096, h=16, P_drop=0.3 (~213 M params with a 37k vocab)."""
    return cls(**{"vocab_size": 37_000, "d_model": 1024, "mlp_dim": 4096, "num_heads": 16, "dropout_rate": 0.3,
                  **overrides})

  @classmethod
  def tiny(cls, **overrides) -> TransformerConfig:
    """A tiny model for tests: 2+2 layers, d_model=32, 4 heads."""
    return cls(**{"vocab_size": 64, "d_model": 32, "num_heads": 4, "num_encoder_layers": 2,
                  "num_decoder_layers": 2, "mlp_dim": 64, "max_len": 64, **overrides})


def _segments_and_positions(ids: Array, segmentation: Array | None, position: Array | None) -> tuple[Array, Array]:
  """Segment ids and positions ``int32[batch, len]``; an unpacked row is one segment over its non-pad tokens."""
  if segmentation is None:
    segmentation = (ids != 0).astype(jnp.int32)
  if position is None:
    position = jnp.broadcast_to(jnp.arange(ids.shape[1], dtype=jnp.int32), ids.shape)
  return segmentation, position


def shift_right(targets: Array, segmentation: Array, bos_id: int = BOS_ID) -> Array:
  """Decoder inputs ``int32[batch, len]``: targets shifted right by one, with ``bos_id`` at each segment start."""
  shifted = jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]
  prev_segment = jnp.pad(segmentation, ((0, 0), (1, 0)))[:, :-1]
  return jnp.where((segmentation != prev_segment) & (segmentation != 0), bos_id, shifted)


class Encoder(nnx.Module):
  """Embedding + positions, ``num_encoder_layers`` :class:`EncoderLayer` s, final norm when pre-LN."""

  def __init__(self, config: TransformerConfig, embed: Embed, *, rngs: nnx.Rngs):
    self.config = config
    self.embedder = Embedder(config, embed, rngs=rngs)
    self.layers = nnx.List([EncoderLayer(config, rngs=rngs) for _ in range(config.num_encoder_layers)])
    if config.pre_norm:
      self.final_norm = Norm(config, rngs=rngs)

  def __call__(self, inputs: Array, inputs_segmentation: Array | None = None, inputs_position: Array | None = None,
               *, deterministic: bool = True, rngs: Rngs = None) -> Array:
    """``inputs int32[batch, src_len]`` -> ``[batch, src_len, d_model]``."""
    seg, pos = _segments_and_positions(inputs, inputs_segmentation, inputs_position)
    mask = masks.segment_mask(seg, seg)
    x = self.embedder(inputs, pos, deterministic=deterministic, rngs=rngs)
    for layer in self.layers:
      x = layer(x, mask, pos, deterministic=deterministic, rngs=rngs)
    return self.final_norm(x) if self.config.pre_norm else x


class Decoder(nnx.Module):
  """Embedding + positions, ``num_decoder_layers`` :class:`DecoderLayer` s, final norm when pre-LN, logits."""

  def __init__(self, config: TransformerConfig, embed: Embed, *, cross_attention: bool, rngs: nnx.Rngs):
    self.config = config
    self.embedder = Embedder(config, embed, rngs=rngs)
    self.layers = nnx.List([DecoderLayer(config, cross_attention=cross_attention, rngs=rngs)
                            for _ in range(config.num_decoder_layers)])
    if config.pre_norm:
      self.final_norm = Norm(config, rngs=rngs)
    if not config.logits_via_embedding:
      init = nnx.initializers.normal(stddev=config.d_model**-0.5)
      self.logits_kernel = param(rngs, init, (config.d_model, config.vocab_size), ("embed", "vocab"),
                                 config.param_dtype)

  def _logits(self, x: Array) -> Array:
    if self.config.pre_norm:
      x = self.final_norm(x)
    if self.config.logits_via_embedding:
      return self.embedder.embed.attend(x) / jnp.sqrt(self.config.d_model)
    kernel = self.logits_kernel[...].astype(self.config.dtype)
    return jnp.einsum("bld,dv->blv", x, kernel, preferred_element_type=jnp.float32)

  def __call__(self, targets: Array, targets_segmentation: Array | None = None, targets_position: Array | None = None,
               encoded: Array | None = None, encoded_segmentation: Array | None = None,
               *, deterministic: bool = True, rngs: Rngs = None) -> Array:
    """Teacher-forced logits ``float32[batch, len, vocab]`` for ``targets int32[batch, len]``.

    ``encoded [batch, src_len, d_model]`` with ``encoded_segmentation int32[batch, src_len]`` (segment ids, or
    1/0 validity) enables cross-attention; target segment k attends to source segment k.
    """
    seg, pos = _segments_and_positions(targets, targets_segmentation, targets_position)
    self_mask = masks.combine_masks(masks.causal_mask(targets.shape[1]), masks.segment_mask(seg, seg))
    cross_mask = None if encoded is None else masks.segment_mask(seg, encoded_segmentation.astype(jnp.int32))
    x = self.embedder(shift_right(targets, seg, self.config.bos_id), pos, deterministic=deterministic, rngs=rngs)
    for layer in self.layers:
      x = layer(x, self_mask, pos, encoded, cross_mask, deterministic=deterministic, rngs=rngs)
    return self._logits(x)

  def init_cache(self, batch_size: int, max_len: int) -> None:
    """Empty self-attention caches for ``batch_size`` rows of up to ``max_len`` tokens; positions start at 0."""
    for layer in self.layers:
      layer.self_attention.init_cache(batch_size, max_len)
    self.cache_index = nnx.Cache(jnp.zeros((batch_size,), jnp.int32))

  def decode_step(self, ids: Array) -> Array:
    """Feeds ``ids int32[batch, t]`` (0 = no token: that row's position does not advance) through the cache.

    Returns logits ``float32[batch, t, vocab]``. The caller supplies the decoder inputs themselves (the first
    one is BOS); there is no shift here.
    """
    pos = self.cache_index[...][:, None] + jnp.arange(ids.shape[1], dtype=jnp.int32)
    x = self.embedder(ids, pos)
    for layer in self.layers:
      x = layer.decode(x, pos)
    self.cache_index[...] = self.cache_index[...] + (ids != 0).sum(axis=1, dtype=jnp.int32)
    return self._logits(x)


class EncoderDecoder(nnx.Module):
  """The encoder-decoder Transformer of "Attention Is All You Need" (translation)."""

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    if config.num_encoder_layers < 1 or config.num_decoder_layers < 1:
      raise ValueError("EncoderDecoder needs num_encoder_layers >= 1 and num_decoder_layers >= 1.")
    self.config = config
    source_embed = Embed(config, rngs=rngs)
    target_embed = source_embed if config.share_embeddings else Embed(config, rngs=rngs)
    self.encoder = Encoder(config, source_embed, rngs=rngs)
    self.decoder = Decoder(config, target_embed, cross_attention=True, rngs=rngs)

  def encode(self, inputs: Array, inputs_segmentation: Array | None = None, inputs_position: Array | None = None,
             *, deterministic: bool = True, rngs: Rngs = None) -> Array:
    """``inputs int32[batch, src_len]`` -> encoded ``[batch, src_len, d_model]``."""
    return self.encoder(inputs, inputs_segmentation, inputs_position, deterministic=deterministic, rngs=rngs)

  def decode(self, encoded: Array, inputs_mask: Array, targets: Array, targets_segmentation: Array | None = None,
             targets_position: Array | None = None, *, deterministic: bool = True, rngs: Rngs = None) -> Array:
    """Teacher-forced logits ``float32[batch, tgt_len, vocab]``.

    ``inputs_mask int32[batch, src_len]``: the inputs' segment ids when packed, else their validity (1/0).
    """
    return self.decoder(targets, targets_segmentation, targets_position, encoded, inputs_mask,
                        deterministic=deterministic, rngs=rngs)

  def __call__(self, inputs: Array, targets: Array, inputs_segmentation: Array | None = None,
               targets_segmentation: Array | None = None, inputs_position: Array | None = None,
               targets_position: Array | None = None, *, deterministic: bool = True, rngs: Rngs = None) -> Array:
    """Logits ``float32[batch, tgt_len, vocab]`` for ``inputs int32[batch, src_len]``, ``targets int32[batch, tgt_len]``."""
    encoded = self.encode(inputs, inputs_segmentation, inputs_position, deterministic=deterministic, rngs=rngs)
    inputs_mask, _ = _segments_and_positions(inputs, inputs_segmentation, inputs_position)
    return self.decode(encoded, inputs_mask, targets, targets_segmentation, targets_position,
                       deterministic=deterministic, rngs=rngs)

  def init_cache(self, inputs: Array, max_decode_len: int) -> None:
    """Encodes ``inputs int32[batch, src_len]`` once and prepares decoding of up to ``max_decode_len`` tokens."""
    encoded = self.encode(inputs)
    for layer in self.decoder.layers:
      layer.cross_attention.init_cross_cache(encoded, inputs != 0)
    self.decoder.init_cache(inputs.shape[0], max_decode_len)

  def decode_step(self, ids: Array) -> Array:
    """See :meth:`Decoder.decode_step`."""
    return self.decoder.decode_step(ids)


class DecoderOnly(nnx.Module):
  """A decoder-only language model (causal self-attention, no cross-attention)."""

  def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
    if config.num_decoder_layers < 1:
      raise ValueError("DecoderOnly needs num_decoder_layers >= 1.")
    self.config = config
    self.decoder = Decoder(config, Embed(config, rngs=rngs), cross_attention=False, rngs=rngs)

  def __call__(self, targets: Array, targets_segmentation: Array | None = None, targets_position: Array | None = None,
               *, deterministic: bool = True, rngs: Rngs = None) -> Array:
    """Next-token logits ``float32[batch, len, vocab]`` for ``targets int32[batch, len]``."""
    return self.decoder(targets, targets_segmentation, targets_position, deterministic=deterministic, rngs=rngs)

  def init_cache(self, batch_size: int, max_decode_len: int) -> None:
    """Prepares decoding of ``batch_size`` rows of up to ``max_decode_len`` tokens (prompt included)."""
    self.decoder.init_cache(batch_size, max_decode_len)

  def decode_step(self, ids: Array) -> Array:
    """See :meth:`Decoder.decode_step`."""
    return self.decoder.decode_step(ids)


TokensToLogits = Callable[[Array, Any], tuple[Array, Any]]


def tokens_to_logits_fn(model: EncoderDecoder | DecoderOnly) -> tuple[TokensToLogits, nnx.State]:
  """Splits a model whose cache is initialised into a pure ``tokens_to_logits(ids, cache)`` and the cache.

  Every leaf of the cache has leading dimension ``batch``, as :mod:`transformer_jax.decoding` requires. The
  parameters are closed over: call this inside the ``jax.jit`` that runs the decoding loop.
  """
  graphdef, cache, rest = nnx.split(model, nnx.Cache, ...)

  def tokens_to_logits(ids: Array, cache: nnx.State) -> tuple[Array, nnx.State]:
    step_model = nnx.merge(graphdef, cache, rest, copy=True)
    logits = step_model.decode_step(ids)
    return logits, nnx.state(step_model, nnx.Cache)

  return tokens_to_logits, cache
