"""Token-level losses and metrics. Padding (target id 0) carries weight 0; sums are normalised by the caller."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array


def cross_entropy(logits: Array, targets: Array, label_smoothing: float = 0.0) -> tuple[Array, Array]:
  """Per-token label-smoothed cross-entropy and plain NLL, both ``float32[batch, len]``.

  The smoothed target puts ``1 - label_smoothing`` on the true token and spreads ``label_smoothing`` uniformly
  over the other ``vocab - 1`` tokens; its entropy is subtracted so that a perfect prediction scores 0 (as in
  Flax's WMT example).

  Args:
    logits: ``float[batch, len, vocab]``.
    targets: ``int[batch, len]``.
  """
  vocab = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  if label_smoothing == 0.0:
    return nll, nll
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1)
  entropy = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
  smoothed = confidence * nll - low * (log_probs.sum(-1) + nll) - entropy
  return smoothed, nll


def token_metrics(logits: Array, targets: Array, label_smoothing: float = 0.0) -> dict[str, Array]:
  """Sums over real tokens (``targets != 0``): ``loss`` (smoothed), ``nll``, ``correct`` and ``tokens``."""
  weights = (targets != 0).astype(jnp.float32)
  smoothed, nll = cross_entropy(logits, targets, label_smoothing)
  correct = (logits.argmax(-1) == targets).astype(jnp.float32)
  return {"loss": (smoothed * weights).sum(), "nll": (nll * weights).sum(),
          "correct": (correct * weights).sum(), "tokens": weights.sum()}


def normalize(sums: dict[str, Array]) -> dict[str, Array]:
  """Per-token means from :func:`token_metrics` sums: ``loss``, ``nll``, ``accuracy``, ``perplexity``."""
  tokens = jnp.maximum(sums["tokens"], 1.0)
  nll = sums["nll"] / tokens
  return {"loss": sums["loss"] / tokens, "nll": nll, "accuracy": sums["correct"] / tokens,
          "perplexity": jnp.exp(nll), "tokens": sums["tokens"]}
