"""Use transformer_jax's Encoder inside your own model and Optax loop: a sequence classifier.

Task (synthetic, generated on the fly): does token 5 occur more often than token 6 in the sequence?

  python examples/classify_with_encoder.py --steps 300
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from transformer_jax.layers import Embed
from transformer_jax.models import Encoder, TransformerConfig


class Classifier(nnx.Module):
  """Our Encoder, mean-pooled over real tokens, then a linear head: ``int32[batch, len]`` -> ``[batch, classes]``."""

  def __init__(self, config: TransformerConfig, num_classes: int, *, rngs: nnx.Rngs):
    self.encoder = Encoder(config, Embed(config, rngs=rngs), rngs=rngs)
    self.head = nnx.Linear(config.d_model, num_classes, rngs=rngs)

  def __call__(self, ids: jax.Array) -> jax.Array:
    valid = (ids != 0)[..., None]
    encoded = self.encoder(ids)
    pooled = (encoded * valid).sum(1) / jnp.maximum(valid.sum(1), 1)
    return self.head(pooled)


def make_batch(rng: np.random.Generator, batch: int = 64, length: int = 16, vocab: int = 12):
  ids = rng.integers(4, vocab, (batch, length))
  for row, n in enumerate(rng.integers(4, length + 1, batch)):
    ids[row, n:] = 0  # variable lengths, 0 = padding
  labels = ((ids == 5).sum(1) > (ids == 6).sum(1)).astype(np.int32)
  return jnp.asarray(ids, jnp.int32), jnp.asarray(labels)


def main(steps: int) -> float:
  config = TransformerConfig.tiny(vocab_size=12, dropout_rate=0.0, pre_norm=True)
  model = Classifier(config, num_classes=2, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adamw(3e-3), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer, ids, labels):
    def loss_fn(model):
      logits = model(ids)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return loss, (logits.argmax(-1) == labels).mean()

  rng = np.random.default_rng(0)
  for step in range(1, steps + 1):
    loss, accuracy = train_step(model, optimizer, *make_batch(rng))
    if step % 50 == 0 or step == steps:
      print(f"step {step}: loss {float(loss):.3f} accuracy {float(accuracy):.3f}")
  return float(accuracy)


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=300)
  main(parser.parse_args().steps)
