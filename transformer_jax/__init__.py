"""transformer_jax: the Transformer of "Attention Is All You Need" and a decoder-only LM, in JAX and Flax NNX.

Public API (importing it never imports TensorFlow):

- :mod:`transformer_jax.masks` -- ``causal_mask``, ``padding_mask``, ``segment_mask``, ``combine_masks``.
- :mod:`transformer_jax.attention` -- ``dot_product_attention``, ``split_heads``, ``merge_heads``.
- :mod:`transformer_jax.positions` -- ``sinusoidal``, ``apply_rope``.
- :mod:`transformer_jax.layers` -- NNX ``MultiHeadAttention`` (with KV cache), ``FeedForward``, ``EncoderLayer``,
  ``DecoderLayer``, ``Embed``, ``Norm``.
- :mod:`transformer_jax.models` -- ``TransformerConfig``, ``Encoder``, ``Decoder``, ``EncoderDecoder``,
  ``DecoderOnly``, ``tokens_to_logits_fn``.

Imported on demand: :mod:`~transformer_jax.decoding` (greedy, beam search, sampling), :mod:`~transformer_jax.inference`
(jitted generation, loading a training workdir), :mod:`~transformer_jax.evaluation` (BLEU, exact match, perplexity),
:mod:`~transformer_jax.sharding`, :mod:`~transformer_jax.train_lib`, :mod:`~transformer_jax.data` (TensorFlow
Datasets lives only there), :mod:`~transformer_jax.generate` (the CLI) and :mod:`~transformer_jax.visualize`.
"""

from transformer_jax import attention, layers, masks, models, positions
from transformer_jax.attention import dot_product_attention, merge_heads, split_heads
from transformer_jax.masks import causal_mask, combine_masks, padding_mask, segment_mask
from transformer_jax.models import (DecoderOnly, Encoder, Decoder, EncoderDecoder, TransformerConfig,
                                    tokens_to_logits_fn)

__version__ = "0.1.0"

__all__ = [
    "attention", "layers", "masks", "models", "positions",
    "dot_product_attention", "split_heads", "merge_heads",
    "causal_mask", "padding_mask", "segment_mask", "combine_masks",
    "TransformerConfig", "Encoder", "Decoder", "EncoderDecoder", "DecoderOnly", "tokens_to_logits_fn",
]
